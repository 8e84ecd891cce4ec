"""Search over long-term memory and assembly of prompt-ready context."""
