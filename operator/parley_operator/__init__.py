"""Parley's Kubernetes operator (kopf): VoiceDeployment → runtime, vLLM and TTS workloads."""
