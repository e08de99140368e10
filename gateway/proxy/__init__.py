"""Upstream client and the streaming proxy."""
