"""The pipeline stages: each reads its inputs, composes the transforms of its domain, and writes its tables."""
