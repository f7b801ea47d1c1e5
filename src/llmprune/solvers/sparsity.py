"""The sparsity a user asks for: an unstructured ratio or an N:M pattern."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import LlmpruneError

MAX_RATIO = 0.99


@dataclass(frozen=True)
class Sparsity:
    """Either ``ratio`` (fraction of weights removed) or ``n``:``m``.

    N:M follows NVIDIA's convention: at most N non-zeros in every M consecutive
    weights along the input dimension (2:4 = 50 %); M - N weights are pruned per group.
    """

    ratio: float | None = None
    n: int | None = None
    m: int | None = None

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.n is None):
            raise LlmpruneError("give exactly one of --ratio R or --pattern N:M")
        if self.ratio is not None:
            if not (0.0 <= self.ratio <= MAX_RATIO):
                raise LlmpruneError(f"ratio {self.ratio} is outside [0, {MAX_RATIO}]: pass e.g. --ratio 0.5")
        else:
            if self.n is None or self.m is None or not (0 < self.n < self.m):
                raise LlmpruneError(f"pattern {self.n}:{self.m} is invalid: need 0 < N < M, e.g. --pattern 2:4")

    @classmethod
    def parse(cls, ratio: float | str | None = None, pattern: str | None = None) -> "Sparsity":
        if pattern is not None and ratio is not None:
            raise LlmpruneError("give exactly one of --ratio R or --pattern N:M, not both")
        if pattern is not None:
            match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(pattern))
            if not match:
                raise LlmpruneError(f"pattern {pattern!r} is not N:M: pass e.g. --pattern 2:4")
            return cls(n=int(match.group(1)), m=int(match.group(2)))
        if ratio is None:
            raise LlmpruneError("give exactly one of --ratio R or --pattern N:M")
        try:
            value = float(ratio)
        except ValueError:
            raise LlmpruneError(f"ratio {ratio!r} is not a number: pass e.g. --ratio 0.5") from None
        return cls(ratio=value)

    @property
    def is_nm(self) -> bool:
        return self.n is not None

    @property
    def nm(self) -> tuple[int, int]:
        """``(N, M)`` of an N:M pattern."""
        if self.n is None or self.m is None:
            raise ValueError(f"sparsity {self} is not an N:M pattern")
        return self.n, self.m

    @property
    def fraction(self) -> float:
        """Fraction of weights removed."""
        if self.ratio is not None:
            return self.ratio
        n, m = self.nm
        return 1.0 - n / m

    @property
    def pruned_per_group(self) -> int:
        n, m = self.nm
        return m - n

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.is_nm else f"{self.ratio:g}"
