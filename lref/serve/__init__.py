"""Serving: `lref serve` launches vLLM's OpenAI server on a GPU, or an embedded CPU server with the same API."""
