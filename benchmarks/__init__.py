"""Runnable benchmarks: markdown tables (+ JSON in benchmarks/results/) of tinygpt against PyTorch."""
