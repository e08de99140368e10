"""Admission in front of routing: tenants and keys, tiers, lanes, limits and the queue."""
