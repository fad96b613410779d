"""Domain-neutral analysis helpers: run views' shared parts, loss matrices, replay, the saved optimizer."""
