"""The HTTP layer: the FastAPI app, its routes (the seeds' too), pages, schemas and middleware, over the engine."""
