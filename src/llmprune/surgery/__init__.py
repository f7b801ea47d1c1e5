"""Structural surgery: physically smaller models, and their masked equivalents."""

from .plan import LayerEdit, StructuredPlan, apply_plan, block_widths, load_plan

__all__ = ["LayerEdit", "StructuredPlan", "apply_plan", "block_widths", "load_plan"]
