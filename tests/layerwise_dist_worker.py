"""Worker of ``test_distributed_layerwise.py``, launched by
``python -m torch.distributed.run --nproc_per_node 2 layerwise_dist_worker.py MODEL_DIR OUT_DIR``:
prunes the tiny model with each layer-wise method of :data:`CASES` (gloo, CPU) and writes
every rank's block weights to ``OUT_DIR/<case>-rank<r>.safetensors``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import llmprune

#: (name, method, ratio, pattern, options): the runs compared with one process
CASES = [
    ("wanda50", "wanda", 0.5, None, {}),
    ("sparsegpt24", "sparsegpt", None, "2:4", {}),
    ("mrp50", "mrp", 0.5, None, {"precision": "float64"}),  # solved to rounding: weights comparable at 1e-4
]
CALIB = {"calib_samples": 5, "seqlen": 16, "seed": 0}


def block_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if ".layers." in k}


def main(model_dir: str, out_dir: str) -> None:
    from safetensors.torch import save_file
    from test_pg import short_calibration_text

    torch.set_num_threads(1)
    short_calibration_text(None)
    import torch.distributed as dist

    for name, method, ratio, pattern, options in CASES:
        model, tok = llmprune.load(model_dir)
        report = llmprune.prune(model, tok, method, ratio=ratio, pattern=pattern, progress=False, **CALIB, **options)
        rank = dist.get_rank()
        save_file(block_weights(model), str(Path(out_dir, f"{name}-rank{rank}.safetensors")))
        Path(out_dir, f"{name}-rank{rank}.json").write_text(json.dumps(report.details))
    dist.barrier()


if __name__ == "__main__":
    main(*sys.argv[1:3])
