"""Per-kernel timing, memory and numeric diffs (built on the executor's plan)."""
