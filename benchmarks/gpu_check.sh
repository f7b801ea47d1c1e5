#!/usr/bin/env bash
# GPU readiness check: run on a machine with CUDA, from the repository root:
#
#     bash benchmarks/gpu_check.sh [OUTDIR]        # e.g. bash benchmarks/gpu_check.sh out/gpu_check
#
# Prints one line per check ("ok" / "FAIL", seconds, last line of the command's output) and
# writes the same lines to benchmarks/results/gpu_check.txt; each check's full log goes to
# OUTDIR/NAME.log. Checks: every method on the default model (SmolLM2-135M) with --device cuda
# --dtype bfloat16 (small calibration, 2 evaluation windows), the streamed pipeline, PG/DISP with
# --offload, and the 2-rank NCCL path (torchrun; PG and DISP) when 2 GPUs exist.
# The flags are those of the CLI when this script was written; if a check fails on a flag,
# compare with `llmprune prune --help`.
set -u
OUT=${1:-$(mktemp -d)}
mkdir -p "$OUT"
PY=${PYTHON:-python}
RESULTS=benchmarks/results/gpu_check.txt
export PYTHONPATH=${PYTHONPATH:-src}
: > "$RESULTS"
CAL="--calib-samples 8 --seqlen 512"
EV="--max-windows 2 --seqlen 2048"

check() {  # check NAME COMMAND...
  local name=$1; shift
  local t0=$(date +%s)
  if "$@" > "$OUT/$name.log" 2>&1; then status=ok; else status=FAIL; fi
  local line="$(printf '%-28s %-4s %5ss  %s' "$name" "$status" "$(( $(date +%s) - t0 ))" "$(tail -n 1 "$OUT/$name.log" | cut -c1-150)")"
  echo "$line" | tee -a "$RESULTS"
}

$PY -c "import torch, sys; assert torch.cuda.is_available(), 'no CUDA'; print(torch.cuda.get_device_name(0), torch.cuda.device_count(), 'GPU(s), torch', torch.__version__)" | tee -a "$RESULTS" || exit 1
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")

check eval-dense $PY -m llmprune eval smollm2-135m --device cuda --dtype bfloat16 $EV --quiet
for m in magnitude wanda sparsegpt mrp; do
  check "prune-$m-50" $PY -m llmprune prune --method $m --ratio 0.5 $CAL --device cuda --dtype bfloat16 --out "$OUT/$m" --force --quiet
  check "eval-$m-50" $PY -m llmprune eval "$OUT/$m" --device cuda --dtype bfloat16 $EV --quiet
done
check prune-sparsegpt-2:4 $PY -m llmprune prune --method sparsegpt --pattern 2:4 $CAL --device cuda --dtype bfloat16 --out "$OUT/sparsegpt24" --force --quiet
for m in wanda-sp flap shortgpt llm-pruner sobp; do
  check "prune-$m-20" $PY -m llmprune prune --method $m --ratio 0.2 $CAL --device cuda --dtype bfloat16 --out "$OUT/$m" --force --quiet
  check "eval-$m-20" $PY -m llmprune eval "$OUT/$m" --device cuda --dtype bfloat16 $EV --quiet
done
check prune-pg-20 $PY -m llmprune prune --method pg --ratio 0.2 $CAL --steps 20 --device cuda --dtype bfloat16 --out "$OUT/pg" --force --quiet
check prune-pg-20-offload $PY -m llmprune prune --method pg --ratio 0.2 $CAL --steps 20 --offload --device cuda --dtype bfloat16 --out "$OUT/pg-off" --force --quiet
check prune-disp-50 $PY -m llmprune prune --method disp --ratio 0.5 $CAL --steps 20 --device cuda --dtype bfloat16 --out "$OUT/disp" --force --quiet
check prune-sobp-20-offload $PY -m llmprune prune --method sobp --ratio 0.2 $CAL --method-args offload=true --device cuda --dtype bfloat16 --out "$OUT/sobp-off" --force --quiet
check prune-disp-50-offload $PY -m llmprune prune --method disp --ratio 0.5 $CAL --steps 20 --offload --device cuda --dtype bfloat16 --out "$OUT/disp-off" --force --quiet
check bench-sobp $PY -m llmprune bench "$OUT/sobp" --vs smollm2-135m --device cuda --dtype bfloat16 --trials 2
# the streamed pipeline (bf16 blocks by default on CUDA), in memory and with memory-mapped activations
check streamed-wanda $PY -m llmprune prune-streamed --method wanda --ratio 0.5 $CAL --device cuda --out "$OUT/s-wanda" --force --quiet
check streamed-sparsegpt-disk $PY -m llmprune prune-streamed --method sparsegpt --ratio 0.5 $CAL --device cuda --activations disk --out "$OUT/s-sparsegpt" --force --quiet
check eval-streamed-sparsegpt $PY -m llmprune eval "$OUT/s-sparsegpt" --device cuda --dtype bfloat16 $EV --quiet
check streamed-flap-disk $PY -m llmprune prune-streamed --method flap --ratio 0.2 $CAL --device cuda --activations disk --out "$OUT/s-flap" --force --quiet
check eval-streamed-flap $PY -m llmprune eval "$OUT/s-flap" --device cuda --dtype bfloat16 $EV --quiet
# the 2-rank NCCL path (PG and DISP are data-parallel under torchrun)
if [ "$NGPU" -ge 2 ]; then
  check nccl-pg-2rank $PY -m torch.distributed.run --nproc_per_node 2 -m llmprune prune --method pg --ratio 0.2 $CAL --steps 20 --device cuda --dtype bfloat16 --out "$OUT/pg-2rank" --force --quiet
  check nccl-disp-2rank $PY -m torch.distributed.run --nproc_per_node 2 -m llmprune prune --method disp --ratio 0.5 $CAL --steps 20 --device cuda --dtype bfloat16 --out "$OUT/disp-2rank" --force --quiet
else
  echo "nccl-2rank                   skip (fewer than 2 GPUs)" | tee -a "$RESULTS"
fi
echo "logs in $OUT; summary in $RESULTS"
