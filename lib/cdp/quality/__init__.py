"""Data-quality rules, metrics and the quality report."""
