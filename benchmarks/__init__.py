"""Benchmarks: charlm beside PyTorch in one process (see README, Performance)."""
