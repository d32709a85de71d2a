"""mlapi: a Hugging Face text model served as a fast, cached prediction API."""

__version__ = "0.1.0"
