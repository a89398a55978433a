"""The prediction API (FastAPI on uvicorn): serves the production version of each model."""
