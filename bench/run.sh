#!/usr/bin/env bash
# Throughput of the mnist stages on Fashion-MNIST, one line per figure:
#   parse MB/s, CSV load MB/s, training samples/s (seed-mlp, mlp, cnn), inference images/s, and
#   ONNX Runtime's images/s on the exported cnn (bench/onnx_runtime.py).
# Training runs one epoch on the first 6,400 training images (cnn: 3,200) to keep the run short.
set -euo pipefail
source "$(dirname "$0")/common.sh"
prepare bench "${1:-/usr/share/datasets/fashion-mnist}"
mnist() { "$MNIST" "$@"; }
sed -n 's/.*(\([0-9.]*\) MB\/s).*/parse_mb_per_s \1/p' "$work/parse.log"

figure() { # name, regex capturing the figure, log file
  local value
  value=$(sed -n "s/$2/\1/p" "$3" | tail -n 1)
  echo "$1 ${value:-?}"
}

subset 6400 1000 "$work/small"
subset 3200 1000 "$work/tiny"

mnist train --backend cpu --config configs/mlp.toml --data "$work/csv" --epochs 1 \
  --output "$work/full-mlp" 2> "$work/load.log"
figure csv_load_mb_per_s '.*CSV in [0-9.]*s, \([0-9.]*\) MB\/s.*' "$work/load.log"

for net in seed-mlp mlp cnn; do
  data="$work/small"; [ "$net" = cnn ] && data="$work/tiny"
  mnist train --backend cpu --config "configs/$net.toml" --data "$data" --epochs 1 \
    --output "$work/model-$net" 2> "$work/train-$net.log"
  figure "train_${net//-/_}_samples_per_s" '^epoch 1: .*, \([0-9]*\) samples\/s$' "$work/train-$net.log"
done

cut -d, -f2- "$work/csv/test.csv" > "$work/attributes.csv"
mnist infer --backend cpu --model "$work/model-cnn" --input "$work/attributes.csv" \
  --output "$work/inferred" 2> "$work/infer.log"
figure infer_cnn_images_per_s '.*(\([0-9]*\) images\/s).*' "$work/infer.log"

# The same model exported to ONNX, in ONNX Runtime on as many threads.
mnist export --model "$work/model-cnn" --format onnx --output "$work/exported" 2> /dev/null
echo "infer_cnn_onnxruntime_images_per_s $(python3 bench/onnx_runtime.py \
  "$work/exported/model.onnx" "$work/attributes.csv" "${MNIST_THREADS:-$(nproc)}")"
