#!/usr/bin/env bash
# The README's main job, on a fresh machine: install, build the demo faces from photos that installed packages ship,
# train the four face networks and three generic BasicSR networks of the same cost (EDSR, RCAN, SwinIR) briefly on the
# CPU (small widths, options/demo/), then benchmark them against bicubic on the held-out demo faces; then a TANet
# trained on realistic degradations (blur, noise, JPEG) against the bicubic-trained one on medium-degraded faces.
# Results: results/demo_x4/benchmark.md (+ CSV) and grid.png, results/demo_medium_x4/ (medium-degraded faces),
# results/infer_jpeg_x4.png (fsr-infer on small JPEG photos);
# checkpoints: experiments/<Net>_demo_x4/models/net_g_latest.pth (used by fsr-benchmark and fsr-infer).
# Usage: bash scripts/demo.sh [--skip-install]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if [ "${1:-}" != "--skip-install" ]; then
  bash scripts/install.sh
  # Optional demo photo source: a group photo with 6 faces (only its data folder is read; the package is not imported).
  $PY -m pip install --quiet --disable-pip-version-check --no-deps insightface==2.1 || echo "insightface not installed: fewer demo faces"
fi

echo "== demo data"
rm -rf demo_data
$PY scripts/make_demo_data.py --out demo_data

NETS="TANet LAAT AMINet WNet EDSR RCAN SwinIR"
for net in $NETS; do
  echo "== train $net"
  lower=$(echo "$net" | tr '[:upper:]' '[:lower:]')
  rm -rf "experiments/${net}_demo_x4"
  fsr-train -opt "options/demo/train_${lower}_demo_x4.yml"
done

echo "== benchmark"
args=()
for net in $NETS; do
  args+=(--net "$net=experiments/${net}_demo_x4/models/net_g_latest.pth")
done
fsr-benchmark --data demo_data/test --scale 4 --out results/demo_x4 --grid-faces 3 "${args[@]}"
cat results/demo_x4/benchmark.md

echo "== real low-quality faces: TANet trained on Real-ESRGAN-style degradations, tested on medium-degraded faces"
rm -rf experiments/TANet_real_demo_x4
fsr-train -opt options/demo/train_tanet_real_demo_x4.yml
# 3 held-out faces x 8 seeded draws of the medium degradation: one draw per face is too noisy a figure on 3 faces
fsr-degrade --data demo_data/test --scale 4 --level medium --seed 0 --draws 8 --out demo_data/test_medium_x4 \
  --overwrite
fsr-benchmark --data demo_data/test_medium_x4 --scale 4 --out results/demo_medium_x4 --grid-faces 3 --niqe \
  --net "TANet=experiments/TANet_demo_x4/models/net_g_latest.pth" \
  --net "TANet-real=experiments/TANet_real_demo_x4/models/net_g_latest.pth"
cat results/demo_medium_x4/benchmark.md

echo "== fsr-infer on small JPEG photos (quality 60): the bicubic-trained and the degradation-trained TANet"
$PY scripts/make_infer_example.py --opt options/demo/train_tanet_demo_x4.yml \
  --weights experiments/TANet_demo_x4/models/net_g_latest.pth --jpeg 60 \
  --vs options/demo/train_tanet_real_demo_x4.yml experiments/TANet_real_demo_x4/models/net_g_latest.pth \
  --labels TANet TANet-real -o results/infer_jpeg_x4.png --json results/infer_jpeg_x4.json
