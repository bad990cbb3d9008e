"""SEE Sidecar server: a FastAPI service fronting an in-process vLLM engine that returns self-scores."""
