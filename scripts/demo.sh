#!/usr/bin/env bash
# The README's main job, on a fresh machine: install, build the demo faces from photos that installed packages ship,
# train the four face networks briefly on the CPU (small widths, options/demo/), benchmark them against bicubic on the
# held-out demo faces, and restore faces in small photos with fsr-infer's code.
# --full adds: three generic BasicSR networks of the same cost (EDSR, RCAN, SwinIR) in the benchmark, a TANet trained
# on realistic degradations (blur, noise, JPEG) against the bicubic-trained one on medium-degraded faces, and fsr-infer
# on small JPEG photos with both TANets (docs/demo.md states the times).
# Trainings run side by side, one thread each, as many at a time as the machine has cores (DEMO_JOBS to change it):
# small networks use one core far better than two, so this halves the wall time on 2 cores (results equal up to the
# float rounding that a thread count changes: docs/reliability.md).
# Results: results/demo_x4/benchmark.md (+ CSV) and grid.png, results/infer_x4.png (fsr-infer on small photos);
# with --full also results/demo_medium_x4/ and results/infer_jpeg_x4.png;
# checkpoints: experiments/<Net>_demo_x4/models/net_g_latest.pth (used by fsr-benchmark and fsr-infer).
# Usage: bash scripts/demo.sh [--skip-install] [--full]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
SKIP_INSTALL=0
FULL=0
for arg in "$@"; do
  case "$arg" in
    --skip-install) SKIP_INSTALL=1 ;;
    --full) FULL=1 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument $arg (use --skip-install, --full or --help)" >&2; exit 2 ;;
  esac
done
JOBS=${DEMO_JOBS:-$(nproc 2>/dev/null || echo 1)}
case "$JOBS" in ''|*[!0-9]*|0) echo "error: DEMO_JOBS must be a positive integer, not '$JOBS'" >&2; exit 2 ;; esac

STEPS=()
step_done() {  # step_done NAME START: record how long a step took
  STEPS+=("$(printf '%-44s %5ds' "$1" $(( $(date +%s) - $2 )))")
}

if [ "$SKIP_INSTALL" = 0 ]; then
  t=$(date +%s)
  bash scripts/install.sh
  # Optional demo photo source: a group photo with 6 faces (only its data folder is read; the package is not imported).
  $PY -m pip install --quiet --disable-pip-version-check --no-deps insightface==2.1 || echo "insightface not installed: fewer demo faces"
  step_done "install" "$t"
fi
T_WORK=$(date +%s)

echo "== demo data"
t=$(date +%s)
rm -rf demo_data
$PY scripts/make_demo_data.py --out demo_data
step_done "demo data (make_demo_data.py)" "$t"

FACE_NETS="WNet TANet LAAT AMINet"   # longest first: the queue below balances better
BASE_NETS="EDSR RCAN SwinIR"
TRAIN="$FACE_NETS"
[ "$FULL" = 1 ] && TRAIN="$FACE_NETS $BASE_NETS TANet_real"

opt_of() {  # options file of a demo network name
  local lower
  lower=$(echo "$1" | tr '[:upper:]' '[:lower:]')
  echo "options/demo/train_${lower}_demo_x4.yml"
}

progress() {  # one line: the last logged iteration of each training
  local line="" net log it total
  for net in $TRAIN; do
    log=$(ls -t experiments/"${net}"_demo_x4/train_*.log 2>/dev/null | head -1 || true)
    total=$(sed -n 's/^ *total_iter: *\([0-9]*\).*/\1/p' "$(opt_of "$net")" | head -1)
    if [ -n "$log" ]; then
      it=$(grep -o 'iter: *[0-9,]*' "$log" | tail -1 | tr -dc '0-9' || true)
      line="$line $net ${it:-0}/$total"
    else
      line="$line $net -"
    fi
  done
  echo "   [$(( $(date +%s) - t ))s]$line"
}

echo "== train:$TRAIN ($JOBS at a time, logs in experiments/<Net>_demo_x4/)"
t=$(date +%s)
mkdir -p results
failed=""
running=0
pids=()
names=()
for net in $TRAIN; do
  rm -rf "experiments/${net}_demo_x4"
  threads=1
  [ "$JOBS" = 1 ] && threads=${OMP_NUM_THREADS:-$(nproc)}
  OMP_NUM_THREADS=$threads fsr-train -opt "$(opt_of "$net")" >"results/demo_train_${net}.out" 2>&1 &
  pids+=($!)
  names+=("$net")
  running=$((running + 1))
  while [ "$running" -ge "$JOBS" ]; do
    sleep 5
    running=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && running=$((running + 1)); done
    [ $(( ($(date +%s) - t) % 30 )) -lt 5 ] && progress
  done
done
while [ -n "$(jobs -rp)" ]; do sleep 5; [ $(( ($(date +%s) - t) % 30 )) -lt 5 ] && progress; done
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    failed="$failed ${names[$i]}"
    echo "training ${names[$i]} failed; the end of its output (results/demo_train_${names[$i]}.out):" >&2
    tail -20 "results/demo_train_${names[$i]}.out" >&2
  fi
done
[ -n "$failed" ] && { echo "error: training failed:$failed" >&2; exit 1; }
step_done "train:$TRAIN" "$t"

echo "== benchmark"
t=$(date +%s)
BENCH="$FACE_NETS"
[ "$FULL" = 1 ] && BENCH="$FACE_NETS $BASE_NETS"
args=()
for net in TANet LAAT AMINet WNet $([ "$FULL" = 1 ] && echo "$BASE_NETS"); do
  args+=(--net "$net=experiments/${net}_demo_x4/models/net_g_latest.pth")
done
fsr-benchmark --data demo_data/test --scale 4 --out results/demo_x4 --grid-faces 3 "${args[@]}"
cat results/demo_x4/benchmark.md
step_done "benchmark:$BENCH" "$t"

echo "== fsr-infer on small photos of the held-out faces (demo TANet)"
t=$(date +%s)
$PY scripts/make_infer_example.py --opt options/demo/train_tanet_demo_x4.yml \
  --weights experiments/TANet_demo_x4/models/net_g_latest.pth -o results/infer_x4.png --json results/infer_x4.json
step_done "fsr-infer example" "$t"

if [ "$FULL" = 1 ]; then
  echo "== real low-quality faces: the degradation-trained TANet on medium-degraded faces"
  t=$(date +%s)
  # 3 held-out faces x 8 seeded draws of the medium degradation: one draw per face is too noisy a figure on 3 faces
  fsr-degrade --data demo_data/test --scale 4 --level medium --seed 0 --draws 8 --out demo_data/test_medium_x4
  fsr-benchmark --data demo_data/test_medium_x4 --scale 4 --out results/demo_medium_x4 --grid-faces 3 --niqe \
    --net "TANet=experiments/TANet_demo_x4/models/net_g_latest.pth" \
    --net "TANet-real=experiments/TANet_real_demo_x4/models/net_g_latest.pth"
  cat results/demo_medium_x4/benchmark.md
  step_done "degraded-face benchmark" "$t"

  echo "== fsr-infer on small JPEG photos (quality 60): the bicubic-trained and the degradation-trained TANet"
  t=$(date +%s)
  $PY scripts/make_infer_example.py --opt options/demo/train_tanet_demo_x4.yml \
    --weights experiments/TANet_demo_x4/models/net_g_latest.pth --jpeg 60 \
    --vs options/demo/train_tanet_real_demo_x4.yml experiments/TANet_real_demo_x4/models/net_g_latest.pth \
    --labels TANet TANet-real -o results/infer_jpeg_x4.png --json results/infer_jpeg_x4.json
  step_done "fsr-infer JPEG example" "$t"
fi

echo
echo "== summary"
for s in "${STEPS[@]}"; do echo "   $s"; done
echo "   $(printf '%-44s %5ds' "total after install" $(( $(date +%s) - T_WORK )))"
echo "Tables:   results/demo_x4/benchmark.md (CSV beside it)$([ "$FULL" = 1 ] && echo ', results/demo_medium_x4/benchmark.md')"
echo "Pictures: results/demo_x4/grid.png, results/infer_x4.png$([ "$FULL" = 1 ] && echo ', results/demo_medium_x4/grid.png, results/infer_jpeg_x4.png')"
echo "Checkpoints: experiments/<Net>_demo_x4/models/net_g_latest.pth (fsr-benchmark --net, fsr-infer --weights)"
[ "$FULL" = 1 ] || echo "More: bash scripts/demo.sh --skip-install --full (generic networks, degraded faces, JPEG photos)"
