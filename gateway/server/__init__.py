"""The HTTP server side: the hardened HTTP/1.1 protocol, the lifecycle (drain, reload)."""
