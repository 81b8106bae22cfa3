"""Benchmark of the commerce server against a bare baseline."""
