#!/usr/bin/env bash
# `make bench-compare`: CPU training and inference of `mnist` beside the PyTorch reference
# (bench/pytorch_reference.py) on Fashion-MNIST: same configs, rows, batch sizes and threads.
#
# Throughput: ROUNDS rounds, each training every network with `mnist` then with PyTorch
# (alternating, so that both see the same machine conditions), 2 epochs on the first 6,400
# training images; a run's figure is its second (steady-state) epoch. Inference: the reference
# CNN trained there classifies the 10,000 test images. One line per figure, medians over rounds:
#   train_cnn_samples_per_s mnist 1180 pytorch 1120 ratio 1.05
# Accuracy: with ACCURACY_EPOCHS > 0, each network then trains that many epochs on all 60,000
# training images with both, and the test accuracies are printed:
#   accuracy_cnn mnist 90.12 pytorch 90.03 difference +0.09
#
# usage: bench/compare.sh [FASHION_DIR]   (env: PYTHON, THREADS, ROUNDS, ACCURACY_EPOCHS, MNIST)
set -euo pipefail
python=${PYTHON:-python3}
threads=${THREADS:-$(nproc)}
rounds=${ROUNDS:-5}
accuracy_epochs=${ACCURACY_EPOCHS:-0}
networks=(cnn mlp seed-mlp)

"$python" -c 'import torch, numpy' 2>/dev/null || {
  echo "bench-compare: $python cannot import torch and numpy (pip install torch numpy, or set PYTHON)" >&2
  exit 1
}
source "$(dirname "$0")/common.sh"
prepare bench-compare "${1:-/usr/share/datasets/fashion-mnist}"
subset 6400 10000 "$work/small"
cut -d, -f2- "$work/csv/test.csv" > "$work/attributes.csv"

ours() { # network, data, epochs, log
  "$MNIST" train --threads "$threads" --backend cpu --config "configs/$1.toml" --data "$2" \
    --epochs "$3" --output "$work/model-$1" 2> "$4"
}
theirs() { # network, data, epochs, log, extra options
  "$python" bench/pytorch_reference.py --threads "$threads" --config "configs/$1.toml" \
    --data "$2" --epochs "$3" "${@:5}" > "$4"
}
last() { # regex capturing the figure, log: the last match
  sed -n "s/$1/\1/p" "$2" | tail -n 1
}
epoch_rate='^epoch [0-9]*: .* \([0-9]*\) samples\/s$'
infer_rate='.*(\([0-9]*\) images\/s)$'

for round in $(seq "$rounds"); do
  for net in "${networks[@]}"; do
    ours "$net" "$work/small" 2 "$work/log"
    last "$epoch_rate" "$work/log" >> "$work/mnist-$net"
    infer=()
    if [ "$net" = cnn ]; then
      infer=(--infer)
      "$MNIST" infer --threads "$threads" --backend cpu --model "$work/model-cnn" \
        --input "$work/attributes.csv" --output "$work/inferred" 2> "$work/log"
      last "$infer_rate" "$work/log" >> "$work/mnist-infer"
    fi
    theirs "$net" "$work/small" 2 "$work/log" "${infer[@]}"
    last "$epoch_rate" "$work/log" >> "$work/pytorch-$net"
    [ "$net" != cnn ] || last "$infer_rate" "$work/log" >> "$work/pytorch-infer"
  done
  echo "round $round of $rounds done" >&2
done

median() { sort -n "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
report() { # name, file suffix
  local a b
  a=$(median "$work/mnist-$2") b=$(median "$work/pytorch-$2")
  awk -v n="$1" -v a="$a" -v b="$b" 'BEGIN { printf "%s mnist %.0f pytorch %.0f ratio %.2f\n", n, a, b, a / b }'
}
for net in "${networks[@]}"; do
  report "train_${net//-/_}_samples_per_s" "$net"
done
report infer_cnn_images_per_s infer

[ "$accuracy_epochs" -gt 0 ] || exit 0
test_accuracy='^test: loss [0-9.]*, accuracy \([0-9.]*\)%$'
for net in "${networks[@]}"; do
  ours "$net" "$work/csv" "$accuracy_epochs" "$work/ours.log"
  theirs "$net" "$work/csv" "$accuracy_epochs" "$work/theirs.log"
  awk -v n="accuracy_${net//-/_}" -v a="$(last "$test_accuracy" "$work/ours.log")" \
    -v b="$(last "$test_accuracy" "$work/theirs.log")" \
    'BEGIN { printf "%s mnist %.2f pytorch %.2f difference %+.2f\n", n, a, b, a - b }'
done
