"""Benchmarks of lytbridge: ingest, end to end, rules, memory (not run by the test suite)."""
