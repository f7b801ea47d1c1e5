"""Worker of ``test_disp.py::test_torchrun_two_ranks_identical_hypernetwork``: run with
``python -m torch.distributed.run --nproc_per_node 2 disp_dist_worker.py OUT_DIR``; each
rank trains DISP on a tiny LLaMA for a few steps (gloo, CPU) and saves its
hypernetwork to ``OUT_DIR/rank{r}.pt``."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from llmprune.methods import PruneContext
from llmprune.methods.disp import DISP, ParamCount
from llmprune.models import get_adapter
from tiny_models import build_tiny


def main(out: Path) -> None:
    torch.set_num_threads(1)
    model = build_tiny("llama", vocab_size=128)
    adapter = get_adapter(model)
    vector_sizes = [s.size for s in ParamCount(model, adapter).specs]
    calib = torch.randint(0, 128, (8, 16), generator=torch.Generator().manual_seed(0))
    method = DISP(0.3, steps=3, lr=0.01, log_every=1)
    report = method.run(PruneContext(model, adapter, calib, progress=False))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.save(
        {
            "hypernet": {k: v.detach().cpu() for k, v in method.hypernet.state_dict().items()},
            "world_size": report.details["world_size"],
            "vector_sizes": vector_sizes,
            "sizes": report.details["selection"],
            "first_batch": next(method._batches(8, rank, world)),
        },
        out / f"rank{rank}.pt",
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
