"""HTTP layer: controllers, dependencies, problem responses and middleware."""
