"""Tasks: synthetic, verifiable, CPU-sized."""
