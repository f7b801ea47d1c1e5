"""Worker of ``test_pg.py::test_pg_data_parallel_two_processes``, launched by
``python -m torch.distributed.run --nproc_per_node 2 pg_dist_worker.py MODEL_DIR OUT_DIR``:
prunes the tiny model with PG (gloo, CPU) and writes ``OUT_DIR/rank<r>.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import llmprune


def main(model_dir: str, out_dir: str) -> None:
    from test_pg import short_calibration_text

    torch.set_num_threads(1)
    short_calibration_text(None)
    model, tok = llmprune.load(model_dir)
    report = llmprune.prune(
        model,
        tok,
        "pg",
        ratio=0.3,
        calib_samples=4,
        seqlen=16,
        progress=False,
        steps=4,
        lr=0.2,
        batch_size=1,
        keep_best=2,
        select_samples=3,
    )
    import torch.distributed as dist

    rank = dist.get_rank()
    pg = report.details
    result = {
        "world_size": pg["world_size"],
        "ranks_identical": pg["ranks_identical"],
        "probabilities": pg["probabilities"],
        "initial_probabilities": pg["initial_probabilities"],
        "history": pg["history"],
        "achieved_ratio": report.achieved_ratio,
        "last_probabilities": pg["last_probabilities"],
        "keep_best": pg["keep_best"],
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()


if __name__ == "__main__":
    main(*sys.argv[1:3])
