"""Benchmarks run by `make bench`; each merges its numbers into runs/bench/results.json."""
