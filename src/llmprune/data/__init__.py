"""Corpora (WikiText-2 embedded; PTB, C4 from a local folder or the hub) and windows."""

from .corpora import CORPORA, load_text
from .windows import calibration_windows, eval_windows, protocol, tokenize

__all__ = ["CORPORA", "calibration_windows", "eval_windows", "load_text", "protocol", "tokenize"]
