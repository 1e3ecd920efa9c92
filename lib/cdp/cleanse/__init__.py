"""Standardise raw channel values and map each source onto the canonical silver entities."""
