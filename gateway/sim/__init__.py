"""A simulated model-server fleet faithful to the engines wire formats."""
