"""``--method manual``: apply a structured plan (YAML/JSON file or dict, see
:mod:`llmprune.surgery.plan`) physically; no calibration, no scores."""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from ..engine.layerwise import peak_rss_mb
from ..errors import LlmpruneError
from ..surgery import StructuredPlan, apply_plan, load_plan
from .base import Method, MethodConfig, PruneContext, PruneResult
from .registry import register
from .units import StructuredMethod


class ManualConfig(MethodConfig):
    spec: str | dict[str, Any] | None = Field(None, description="YAML/JSON plan of what to remove per layer")


@register
class Manual(StructuredMethod):
    name = "manual"
    summary = "removes exactly what a YAML/JSON plan lists (spec=FILE)"
    Config = ManualConfig
    config: ManualConfig

    def __init__(self, ratio: None = None, /, **options: object) -> None:
        self.ratio = None  # type: ignore[assignment]  # the achieved ratio is reported
        Method.__init__(self, None, **options)
        spec = self.config.spec
        if spec is None:
            raise LlmpruneError(
                "--method manual needs a plan: --method-args spec=FILE listing what to remove per layer"
            )
        self.plan = StructuredPlan.from_dict(spec) if isinstance(spec, dict) else load_plan(spec)

    @classmethod
    def target(cls, ratio: float | str | None, pattern: str | None) -> None:
        if ratio is not None or pattern is not None:
            raise LlmpruneError("--method manual takes a plan (--method-args spec=FILE), not --ratio/--pattern")
        return None

    @property
    def needs_calibration(self) -> bool:
        return False

    def options(self) -> dict:
        return {"plan": self.plan.to_dict()}

    def method_args(self) -> dict:
        return {"spec": self.plan.to_dict()}

    def run(self, ctx: PruneContext) -> PruneResult:
        t0 = time.perf_counter()
        apply_plan(ctx.adapter, self.plan)
        return PruneResult(seconds=time.perf_counter() - t0, peak_rss_mb=peak_rss_mb())
