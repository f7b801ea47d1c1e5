"""Layer-wise execution engine and calibration statistics."""

from .layerwise import BlockRunner, EngineStats, LayerwiseEngine, peak_rss_mb, to_device
from .stats import InputStats, collect_inputs

__all__ = ["BlockRunner", "EngineStats", "InputStats", "LayerwiseEngine", "collect_inputs", "peak_rss_mb", "to_device"]
