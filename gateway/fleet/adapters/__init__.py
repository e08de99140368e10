"""Engine adapters: the only place engine differences live."""
