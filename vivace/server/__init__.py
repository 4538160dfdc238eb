"""OpenAI-compatible HTTP API (FastAPI + uvicorn) over the vivace engine."""
