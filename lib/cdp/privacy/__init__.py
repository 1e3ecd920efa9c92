"""Consent state and its enforcement wherever data is used for a purpose."""
