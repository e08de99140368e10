"""Pure routing decisions: filters, scorers, pickers and profiles."""
