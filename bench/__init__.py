"""Benchmarks: printed figures, never timed assertions inside tests."""
