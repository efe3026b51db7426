"""HTTP guards shared by the runtime and the TTS server, one small module per idea: bearer
tokens (`tokens`), who the client is (`clients`), a per-client rate limit (`ratelimit`), what a
request body may be (`bodies`), what a browser may do (`browser`) and the API docs pages
(`docs`). Only the web servers import them (they need Starlette); `tokens` needs nothing."""
