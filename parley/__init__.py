"""Parley: realtime voice agents on Kubernetes. The `parley` command is the public face."""

__version__ = "0.1.0"
