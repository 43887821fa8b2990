"""Level-1 passes: constant and shape folding, Identity/Dropout elimination, dead code, CSE."""
