"""Benchmark scripts: each runs alone (python benchmarks/NAME.py) and prints its figures."""
