"""inference package (see README)."""
