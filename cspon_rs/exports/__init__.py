"""Exports for people: warning lists, patrol files, image chips."""
