"""Saving pruned models."""

from .atomic import atomic_directory, check_output_dir
from .save import save_pruned

__all__ = ["atomic_directory", "check_output_dir", "save_pruned"]
