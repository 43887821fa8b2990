"""Level-2 passes: fusion rule families, one module each (pattern / check / rewrite)."""
