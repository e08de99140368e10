"""The backend fleet: registry, health and load polling, engine adapters."""
