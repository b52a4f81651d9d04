"""Benchmarks of libcem, run from a checkout: python -m benchmarks.NAME (not part of the installed package)."""
