"""Parley against another voice-agent framework (Pipecat), same models, same machine."""
