"""Benchmarks (issue #6): each script prints a table and appends it, with its context, to RESULTS.md."""
