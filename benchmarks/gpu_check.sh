#!/usr/bin/env bash
# The GPU checks of docs/performance.md in one command, sized for a short lease of one GPU
# (~7 minutes on an H200, start-up aside; kept under 8).  Needs torch with CUDA and transformers; no install:
#
#     OUT=/tmp/gpu bash benchmarks/gpu_check.sh
#
# Writes JSON and logs under $OUT (default ./gpu-check); the numbers go into docs/performance.md
# ("GPU") and the JSON into docs/data/.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null
  $py -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
} > "$out/env.txt" 2>&1
status=0
run() {  # name, then the command; a failing step is recorded and the rest still run
  local name=$1; shift
  echo "=== $name: $*" | tee -a "$out/log.txt"
  local t0=$(date +%s)
  "$@" >> "$out/log.txt" 2>&1 || { echo "=== $name FAILED" | tee -a "$out/log.txt"; status=1; }
  echo "=== $name took $(( $(date +%s) - t0 )) s" | tee -a "$out/log.txt"
}
run refresh_pdp $py benchmarks/threshold_refresh.py --device cuda --method pdp --json "$out/refresh_pdp.json"
run refresh_gmp $py benchmarks/threshold_refresh.py --device cuda --method gmp --json "$out/refresh_gmp.json"
for prec in fp32 bf16; do
  run "step_$prec" $py benchmarks/step_overhead.py --device cuda --model gpt2 --batch 8 --seq 1024 \
      --precision "$prec" --variants dense,pdp,gmp --steps 15 --warmup 3 --mem-steps 2 --json "$out/step_$prec.json"
done
# the end of a real run: pruned to the target, masks saturated as tau anneals (two taus, fewer steps)
run step_annealed_fp32 $py benchmarks/step_overhead.py --device cuda --model gpt2 --batch 8 --seq 1024 \
    --precision fp32 --variants dense,pdp,gmp --state annealed --taus 0.012,0.001 --steps 8 --warmup 2 \
    --mem-steps 0 --json "$out/step_annealed_fp32.json"
# the physical shrink on the GPU: GPT-2 small's shape against its 25/50/75% MLP-neuron shrinks, bf16
run shrink_bf16 $py benchmarks/shrink_device.py --device cuda --dtype bf16 --json "$out/shrink_bf16.json"
run cuda_tests $py -m pytest -q -p no:cacheprovider tests/pdp/test_select.py tests/pdp/test_precision.py \
    tests/pdp/test_mask.py tests/pdp/test_attach.py
tail -n 40 "$out/log.txt"
exit $status
