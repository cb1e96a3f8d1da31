#!/usr/bin/env bash
# `make bench-gpu`: `mnist` on the GPU (wgpu) beside its PyTorch CUDA twin
# (bench/pytorch_reference.py --device cuda), one after the other on the same GPU, on
# Fashion-MNIST with configs/fashion-cnn.toml (54,000 training images after its validation
# split). Every `mnist` figure comes twice: with a cold GPU cache (a new --cache-dir: kernels
# compiled and autotuned in the process) and a warm one (the same directory again, as the next
# Pachyderm datum on a node finds it). One line per figure:
#   gpu NVIDIA H200 (discrete adapter, vulkan, ...)
#   epoch1_b64_s mnist_cold 57.6 mnist_warm 8.2 pytorch 6.4
#   epoch2_b64_samples_per_s mnist_cold 23900 mnist_warm 24100 pytorch 28900
#   ...
# Epoch 1 includes start-up; epoch 2 is the steady speed. process_2_epochs_b64_s is the whole
# command (data loading included on both sides), infer_10k_s a fresh `mnist infer` of the
# 10,000 test images against PyTorch's inference of the same. seed_mlp_b1_samples_per_s trains
# configs/seed-mlp.toml (batch 1) on 4,000 images on the GPU and on the CPU, and
# auto_seed_mlp / auto_fashion_cnn say which device `--backend auto` picks for each.
#
# usage: bench/gpu.sh [FASHION_DIR]   (env: PYTHON, MNIST)
set -euo pipefail
python=${PYTHON:-python3}

"$python" -c 'import torch, numpy, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null || {
  echo "bench-gpu: $python has no torch with CUDA and numpy, or sees no CUDA GPU (set PYTHON)" >&2
  exit 1
}
source "$(dirname "$0")/common.sh"
prepare bench-gpu "${1:-/usr/share/datasets/fashion-mnist}"
"$MNIST" devices > "$work/devices" 2>&1
grep -q '^--backend auto uses: wgpu' "$work/devices" || {
  echo "bench-gpu: no GPU for wgpu:" >&2
  cat "$work/devices" >&2
  exit 1
}
sed -n 's/^backend: wgpu on \(.*\): .*/gpu \1/p' "$work/devices"
subset 4000 1000 "$work/small"
cut -d, -f2- "$work/csv/test.csv" > "$work/attributes.csv"

config=configs/fashion-cnn.toml
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# The figure of epoch N in a training log (ours and PyTorch's print the same line).
epoch_seconds() { sed -n "s/^epoch $1: .*; \([0-9.]*\)s, [0-9]* samples\/s$/\1/p" "$2" | tail -n 1; }
epoch_rate() { sed -n "s/^epoch $1: .* \([0-9]*\) samples\/s$/\1/p" "$2" | tail -n 1; }

ours() { # name, cache, batch: trains 2 epochs; the log is $work/NAME.log, the time NAME.s
  local start
  start=$(now)
  "$MNIST" train --backend wgpu --cache-dir "$work/$2" --config "$config" --data "$work/csv" \
    --epochs 2 --batch-size "$3" --output "$work/model-$1" 2> "$work/$1.log"
  elapsed "$start" > "$work/$1.s"
}
theirs() { # name, batch
  local start
  start=$(now)
  "$python" bench/pytorch_reference.py --device cuda --config "$config" --data "$work/csv" \
    --epochs 2 --batch-size "$2" --infer > "$work/$1.log"
  elapsed "$start" > "$work/$1.s"
}
e1() { epoch_seconds 1 "$work/$1.log"; }
e2() { epoch_rate 2 "$work/$1.log"; }
whole() { cat "$work/$1.s"; }
row() { # figure name, extractor, run names (cold, warm, pytorch)
  printf '%s mnist_cold %s mnist_warm %s pytorch %s\n' "$1" "$($2 "$3")" "$($2 "$4")" "$($2 "$5")"
}

for batch in 64 512; do
  ours "cold-$batch" "cache-$batch" "$batch"
  ours "warm-$batch" "cache-$batch" "$batch"
  theirs "pytorch-$batch" "$batch"
  row "epoch1_b${batch}_s" e1 "cold-$batch" "warm-$batch" "pytorch-$batch"
  row "epoch2_b${batch}_samples_per_s" e2 "cold-$batch" "warm-$batch" "pytorch-$batch"
done
row process_2_epochs_b64_s whole cold-64 warm-64 pytorch-64

infer() { # name: a fresh process classifying the 10,000 test images with the batch-64 model
  local start
  start=$(now)
  "$MNIST" infer --backend wgpu --cache-dir "$work/cache-infer" --model "$work/model-warm-64" \
    --input "$work/attributes.csv" --output "$work/inferred" 2> "$work/$1.log"
  elapsed "$start" > "$work/$1.s"
}
infer infer-cold
infer infer-warm
sed -n 's/^inferred \([0-9]*\) images in \([0-9.]*\)s.*/\2/p' "$work/pytorch-64.log" > "$work/infer-pytorch.s"
row infer_10k_s whole infer-cold infer-warm infer-pytorch

seed_mlp() { # backend
  "$MNIST" train --backend "$1" --cache-dir "$work/cache-64" --config configs/seed-mlp.toml \
    --data "$work/small" --output "$work/model-seed-$1" 2> "$work/seed-$1.log"
  epoch_rate 1 "$work/seed-$1.log"
}
printf 'seed_mlp_b1_samples_per_s wgpu %s cpu %s\n' "$(seed_mlp wgpu)" "$(seed_mlp cpu)"
picks() { # config: the backend `--backend auto` trains it on
  "$MNIST" train --backend auto --cache-dir "$work/cache-64" --config "$1" --data "$work/small" \
    --epochs 1 --output "$work/model-auto" 2>&1 | sed -n 's/^backend: \([a-z]*\) on .*/\1/p'
}
printf 'auto_seed_mlp %s\n' "$(picks configs/seed-mlp.toml)"
printf 'auto_fashion_cnn %s\n' "$(picks "$config")"
