"""Benchmarks and the scripted WebRTC peer they (and the end-to-end tests) talk through."""
