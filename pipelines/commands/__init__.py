"""Subcommands of the rnnlab CLI, one module each."""
