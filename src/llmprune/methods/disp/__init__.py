"""DISP: dimension-independent structural pruning (Gao et al., "DISP-LLM:
Dimension-Independent Structural Pruning for Large Language Models", NeurIPS 2024,
arXiv 2410.11988), exported as a physically smaller model.

Five binary selection vectors per block (:mod:`.selection`): attention input ``s1`` and
output ``s2``, MLP input ``s3``, intermediate ``s4`` and output ``s5``; a pruned block reads
``index_select(Norm(x), I_in)`` and writes ``x.index_add(I_out, out)``
(:func:`llmprune.surgery.structural.slice_residual`). The masks come from a hypernetwork
(:mod:`.hypernet`: fixed inputs → bi-GRU → LayerNorm → GELU → one linear head per
vector; Gumbel-sigmoid, straight-through or ReinMax hard masks) trained with every LLM
weight frozen on the paper's objective ``CE(model with masks) + λ·|log(P(hard masks) /
P_target)|``, ``P`` the exact kept parameter count (:class:`ParamCount`). ``target``:
``ratio`` of all parameters (the paper's) or of block linear weights. The exported
masks are the noise-free ``a + b > 0`` masks with one global logit shift found by
bisection so the target is met without being exceeded. Gradient checkpointing per
block, bf16 autocast, offloading and ``torchrun`` data parallelism (gradients averaged,
:mod:`llmprune.engine.distributed`) are options. Measurements and the choice of
defaults: docs/methods/disp.md.
"""

from .method import DISP, DISPConfig
from .selection import KINDS, ParamCount, SelectionMasks, Term, VectorSpec, apply_disp_masks, match_budget

__all__ = [
    "DISP",
    "DISPConfig",
    "KINDS",
    "ParamCount",
    "SelectionMasks",
    "Term",
    "VectorSpec",
    "apply_disp_masks",
    "match_budget",
]
