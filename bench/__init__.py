"""Benchmarks of prefix-gateway: routing quality against the simulated fleet."""
