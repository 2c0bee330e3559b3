"""Benchmarks that print figures and write their results under ``docs/benchmarks/``."""
