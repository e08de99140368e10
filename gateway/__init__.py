"""prefix-gateway: a prefix-cache-aware gateway for LLM inference fleets."""
