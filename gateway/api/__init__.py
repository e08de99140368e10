"""OpenAI-compatible HTTP routes, health and operations endpoints."""
