"""Benchmarks and evaluations that print measured figures (never run by the unit tests' timers)."""
