#!/usr/bin/env bash
# GPU check, ready for the first machine with a CUDA GPU (docs/speed.md, "GPU check"). Meant to finish in about 5 minutes on
# one modern GPU; the most valuable stage runs first and every stage has a time limit (STAGE_TIMEOUT, seconds), so a
# slow stage cannot eat a short GPU loan:
#  (b) one paper option file per network and scale trains 20 iterations through fsr-train on one GPU with finite
#      losses (scripts/gpu_check.py; each run limited to RUN_TIMEOUT seconds), reporting its training images/s,
#  (b2) the same with train.amp: bf16 + channels_last (--amp bf16), then the training images/s of both side by side,
#  (a) the test suite's GPU-marked tests (tests/test_gpu.py: every network on CUDA, fp32 and bf16 autocast +
#      channels_last, against the CPU; SDPA against the explicit attention),
#  (c) fsr-speed's GPU columns for every network at its paper configuration (inference ms fp32 / bf16+channels_last,
#      training images/s fp32 vs bf16+channels_last, peak GPU memory), written to results/gpu_check/speed_gpu.md,
#  (d) with two or more GPUs, a 2-process DDP run (torchrun, NCCL) of one option file.
# On a machine without a CUDA GPU it says so in one line and exits 0.
# Usage: bash scripts/gpu_check.sh      (after scripts/install.sh --dev; PYTHON selects the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
NGPU=$($PY -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null || echo 0)
if [ "$NGPU" = "0" ]; then
  echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to check."
  exit 0
fi
OUT=results/gpu_check
mkdir -p "$OUT"
$PY -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'x', torch.cuda.device_count(), '| torch', torch.__version__)"
STAGE_TIMEOUT=${STAGE_TIMEOUT:-150}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}
status=0
echo "== (b) 20 training iterations of one paper configuration per network and scale, on one GPU"
CUDA_VISIBLE_DEVICES=0 timeout "$STAGE_TIMEOUT" $PY scripts/gpu_check.py --iters 20 --include options/baselines \
  --timeout "$RUN_TIMEOUT" --workdir "$OUT/train" || status=1
echo "== (b2) the same with train.amp: bf16 + channels_last; training images/s of fp32 and bf16"
CUDA_VISIBLE_DEVICES=0 timeout "$STAGE_TIMEOUT" $PY scripts/gpu_check.py --iters 20 --include options/baselines \
  --timeout "$RUN_TIMEOUT" --workdir "$OUT/train" --amp bf16 || status=1
echo "== (a) GPU tests"
timeout "$STAGE_TIMEOUT" $PY -m pytest -q -m gpu tests/test_gpu.py || status=1
echo "== (c) fsr-speed GPU columns (paper configurations)"
CUDA_VISIBLE_DEVICES=0 timeout "$STAGE_TIMEOUT" fsr-speed --gpu-only --quick --repeats 5 --out "$OUT/speed_gpu.md" \
  >/dev/null || status=1
cat "$OUT/speed_gpu.md" || true
if [ "$NGPU" -ge 2 ]; then
  echo "== (d) 2-process DDP"
  timeout "$STAGE_TIMEOUT" $PY scripts/gpu_check.py --iters 20 --ddp 2 --only train_tanet_x4 --workdir "$OUT/ddp" \
    || status=1
else
  echo "== (d) 2-process DDP: skipped (one GPU)"
fi
exit $status
