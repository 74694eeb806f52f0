#!/usr/bin/env bash
# Dry run of one section of docs/REPRODUCE.md on tiny fake copies of the datasets, on the CPU, in minutes: the section's
# preparation, training, test and benchmark commands with the paper's counts scaled down (--recipe-scale), the flags
# the 40-90 px fake faces need (--min-box 40 --max-upscale 4 --min-face 40), 2 training iterations at batch 1
# (TANet and W-Net x4 on 64x64 crops), landmark parsing maps instead of BiSeNet's and W-Net's key-region loss without
# its VGG half (no weights here). It proves that the commands run on your machine, nothing about the papers' numbers.
# Everything is written under WORK (default /tmp/fsr_dry: fake/, data/, datasets/ links, experiments/, results/), never
# into this repository's datasets/ or experiments/.
# Usage: bash scripts/reproduce_dry_run.sh {laat|aminet|tanet|wnet|all} [WORK]   (GNU coreutils: realpath -m)
set -euo pipefail
REPO=$(realpath "$(dirname "$0")/..")
PY=${PYTHON:-python}
SECTION=${1:-}
WORK=${2:-/tmp/fsr_dry}
case "$SECTION" in
  laat|aminet|tanet|wnet|all) ;;
  *) echo "usage: bash scripts/reproduce_dry_run.sh {laat|aminet|tanet|wnet|all} [WORK]" >&2; exit 2 ;;
esac
WORK=$(realpath -m "$WORK")
case "$WORK/" in
  "$REPO"/*) echo "error: WORK ($WORK) is inside the repository; give a folder outside it" >&2; exit 2 ;;
esac
# WORK is this script's: a folder it made before (its marker file) or a new or empty one; anything else is refused,
# so that nothing of the user's is replaced (the options link, datasets/ links, data/, experiments/).
if [ -e "$WORK" ] && [ ! -e "$WORK/.fsr_dry_run" ] && [ -n "$(ls -A "$WORK" 2>/dev/null || echo x)" ]; then
  echo "error: WORK ($WORK) exists and was not made by this script; give a new or empty folder" >&2; exit 2
fi
mkdir -p "$WORK"
touch "$WORK/.fsr_dry_run"
cd "$WORK"
ln -sfn "$REPO/options" options
mkdir -p datasets
if [ ! -d fake ]; then  # built aside and renamed: an interrupted build is redone, not reused
  rm -rf fake.tmp
  $PY "$REPO/scripts/make_fake_datasets.py" fake.tmp
  mv fake.tmp fake
fi
# this checkout's code first (as the tests run it), also where an older copy of the plugin is pip-installed
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

# The overrides of every training: CPU, no loader workers, batch 1, 2 iterations, validation and a checkpoint at 2.
T=(num_gpu=0 datasets:train:num_worker_per_gpu=0 datasets:train:batch_size_per_gpu=1 train:total_iter=2
   val:val_freq=2 logger:print_freq=1 logger:save_checkpoint_freq=2 logger:use_tb_logger=false)
SMALL=(--max-upscale 4 --min-face 40)
run() { echo "+ $*"; "$@"; }
link() { ln -sfn "$WORK/$1" "datasets/$2"; }

laat() {
  run fsr-prepare fake/CelebA --recipe laat -o data/laat/CelebA --recipe-scale 0.002 --min-box 40 "${SMALL[@]}"
  run fsr-prepare fake/Helen --recipe laat --dataset helen -o data/laat/Helen --recipe-scale 0.02 --min-box 40 "${SMALL[@]}"
  link data/laat/CelebA CelebA; link data/laat/Helen Helen
  run fsr-train -opt options/train_laat_x8.yml --force_yml "${T[@]}"
  run fsr-test -opt options/test_laat_x8.yml --force_yml num_gpu=0
  # the ablation tests' form: name= gives each test its own results/ folder
  run fsr-test -opt options/test_laat_x8.yml --force_yml num_gpu=0 name=LAAT_x8_CelebA_test_named \
    path:pretrain_network_g=experiments/LAAT_x8_CelebA/models/net_g_latest.pth
  [ -d results/LAAT_x8_CelebA_test_named ] || { echo "error: fsr-test name= did not name the results folder" >&2; exit 1; }
  run fsr-benchmark --data datasets/Helen/test --scale 8 --net LAAT=experiments/LAAT_x8_CelebA/models/net_g_latest.pth \
    --paper laat --out results/laat_helen_x8
}

aminet() {
  run fsr-prepare fake/CelebA --recipe aminet -o data/aminet/CelebA --recipe-scale 0.000334
  run fsr-prepare fake/Helen --recipe aminet --dataset helen -o data/aminet/Helen --recipe-scale 0.04 "${SMALL[@]}"
  link data/aminet/CelebA CelebA; link data/aminet/Helen Helen
  run fsr-train -opt options/train_aminet_x8.yml --force_yml "${T[@]}"
  run fsr-test -opt options/test_aminet_x8.yml --force_yml num_gpu=0
  run fsr-benchmark --data datasets/Helen/test --scale 8 \
    --net AMINet=experiments/AMINet_x8_CelebA/models/net_g_latest.pth --paper aminet --out results/aminet_helen_x8
}

tanet() {
  run fsr-prepare fake/FFHQ --recipe tanet-ffhq -o data/tanet/FFHQ --recipe-scale 0.001
  run fsr-prepare fake/CelebA --recipe tanet-celeba -o data/tanet/CelebA --recipe-scale 0.001
  link data/tanet/FFHQ FFHQ; link data/tanet/CelebA CelebA
  run fsr-train -opt options/train_tanet_ffhq_x4.yml --force_yml "${T[@]}" datasets:train:gt_size=64
  run fsr-test -opt options/test_tanet_ffhq_x4.yml --force_yml num_gpu=0
  run fsr-benchmark --data datasets/FFHQ/test --scale 4 --net TANet=experiments/TANet_x4_FFHQ/models/net_g_latest.pth \
    --paper tanet --out results/tanet_ffhq_x4
  run fsr-train -opt options/train_tanet_x4.yml --force_yml "${T[@]}" datasets:train:gt_size=64
  run fsr-test -opt options/test_tanet_x4.yml --force_yml num_gpu=0
}

wnet() {
  run fsr-prepare fake/CelebA --recipe wnet-mode1 -o data/wnet-mode1/CelebA --recipe-scale 0.00002 --parsing landmarks \
    "${SMALL[@]}"
  run fsr-prepare fake/Helen --recipe wnet-mode1 --dataset helen -o data/wnet-mode1/Helen --recipe-scale 0.04 \
    --parsing landmarks "${SMALL[@]}"
  link data/wnet-mode1/CelebA CelebA; link data/wnet-mode1/Helen Helen
  run fsr-train -opt options/train_wnet_x4.yml --force_yml "${T[@]}" datasets:train:gt_size=64 \
    train:key_region_opt:perceptual_weight=0
  run fsr-test -opt options/test_wnet_x4.yml --force_yml num_gpu=0
  run fsr-benchmark --data datasets/Helen/test --scale 4 --net W-Net=experiments/WNet_x4_CelebA/models/net_g_latest.pth \
    --paper wnet --out results/wnet_mode1_Helen_x4
}

start=$(date +%s)
if [ "$SECTION" = all ]; then laat; aminet; tanet; wnet; else "$SECTION"; fi
echo "reproduce_dry_run: section $SECTION ran in $(( $(date +%s) - start )) s under $WORK (nothing here is a result)"
