"""Subcommands of the `lmprobe` console script, one module each."""
