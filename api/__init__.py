"""FastAPI service over the recipe store."""
