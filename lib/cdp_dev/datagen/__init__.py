"""Synthetic multi-source Chinese customer data with hidden ground truth, for exercising the CDP pipeline end to end."""

from cdp_dev.datagen.generator import GenerationSummary, generate

__all__ = ["GenerationSummary", "generate"]
