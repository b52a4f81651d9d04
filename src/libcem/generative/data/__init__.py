"""Data sources (fractals, digits, folder:PATH, cifar10, mnist) behind one registry."""

from libcem.generative.data.base import ImageSet, Splits, batch_indices
from libcem.generative.data.registry import SOURCES, DataConfig, load_data, source_help

__all__ = ["ImageSet", "Splits", "batch_indices", "SOURCES", "DataConfig", "load_data", "source_help"]
