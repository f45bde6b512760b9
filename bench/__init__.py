"""Benchmarks: side by side, in one run, written to BENCHMARKS.md (issue 6/7)."""
