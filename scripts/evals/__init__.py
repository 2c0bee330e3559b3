"""The evaluation harness: benchmarks with fixed splits, methods run through the real queue,
metrics and reports (`sale eval`)."""
