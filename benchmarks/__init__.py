"""Benchmarks of invariants against hand-written SQL and the original per-user loop."""
