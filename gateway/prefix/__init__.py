"""Prompt prefix hashing and the cache-location index."""
