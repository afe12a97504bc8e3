"""Benchmark sections of rnnlab bench, one module each."""
