#!/usr/bin/env bash
# `make profile`: where the time of a CPU training step goes, operation by operation. Trains
# CONFIG for three epochs on the first 3,200 Fashion-MNIST training images (150 steps of the
# reference CNN: the first steps' warm-up weighs little), on one thread (so that every sample
# has the whole call stack), under `perf record`; bench/profile_ops.py then charges each sample
# to the layer, backward step or other part of the step it was taken in.
#
# usage: bench/profile.sh [CONFIG] [FASHION_DIR]   (env MNIST: another mnist binary to profile)
set -euo pipefail
config=${1:-configs/cnn.toml}
command -v perf > /dev/null || { echo "profile: perf missing (apt-get install linux-perf)" >&2; exit 1; }
source "$(dirname "$0")/common.sh"
prepare profile "${2:-/usr/share/datasets/fashion-mnist}"
subset 3200 1000 "$work/small"
perf record --quiet -F 999 --call-graph dwarf,32768 -o "$work/perf.data" -- \
  "$MNIST" train --threads 1 --backend cpu --config "$config" --data "$work/small" \
  --epochs 3 --output "$work/model" 2> "$work/log"
steps=$(sed -n 's/^epoch [0-9]* step [0-9]*\/\([0-9]*\):.*/\1/p' "$work/log" | tail -n 1)
seconds=$(sed -n 's/^epoch [0-9]*: .*; \([0-9.]*\)s, .*/\1/p' "$work/log" | paste -sd+ | bc)
echo "$config, 1 thread: $(grep '^epoch 3:' "$work/log")"
perf script --no-inline -F comm,period,ip,sym -i "$work/perf.data" 2> /dev/null |
  python3 bench/profile_ops.py --steps "$steps" --seconds "$seconds"
