"""The language-model side: GPT-2-style models on token blocks."""
