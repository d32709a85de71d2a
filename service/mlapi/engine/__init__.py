"""The inference engine: tokenize, batch, run a backend, score, cache.

The HTTP layer (`mlapi.api`) calls it; nothing here needs a web framework.
"""
