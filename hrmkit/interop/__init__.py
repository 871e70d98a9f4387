"""Bridges to other implementations' checkpoints and formats."""
