"""Engram: memory for AI agents and chatbots."""

__version__ = "0.1.0"
