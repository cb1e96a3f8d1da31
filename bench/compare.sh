#!/usr/bin/env bash
# `make bench-compare`: CPU training and inference of `mnist` beside the PyTorch reference
# (bench/pytorch_reference.py): same configs, rows, batch sizes and thread counts, the two
# alternating so that both see the same machine conditions. One line per figure, e.g. (as
# printed on 2 cores of a Zen 4; the accuracy line's format only):
#   instruction_set mnist AVX-512 pytorch AVX512
#   gemm_peak_gflops threads 2 201
#   train_cnn_samples_per_s threads 1 mnist 1042 pytorch 828 ratio 1.26 share_of_peak mnist 0.72 pytorch 0.57
#   infer_cnn_images_per_s threads 2 mnist 6137 pytorch 2231 ratio 2.75 share_of_peak mnist 0.73 pytorch 0.27
#   scaling_cnn threads 1 1042 2 2031 efficiency 1.00 0.97
#   long_run_cnn_batch32 threads 2 mnist early 1861 late 1965 kept 1.06 pytorch early 1343 late 1147 ratio 1.71
#   accuracy_cnn mnist A pytorch B difference A-B
#   quality_fashion_best threads 2 mnist accuracy 93.42 seconds 523 samples_per_s 1209 pytorch accuracy 93.31 seconds 656 samples_per_s 902 difference +0.11 ratio 1.34
#
# Peak: the gemm crate's f32 product of two 2048x2048 matrices at each thread count
# (model/examples/gemm_peak.rs, best of five), what the shares of peak divide by.
# Throughput: at each thread count of THREADS (default: 1 and every core), ROUNDS rounds, each
# training every network (the reference CNN, the MLPs and fashion-best, the batch-norm network)
# for 2 epochs on the first 6,400 Fashion-MNIST training images with mnist, then with PyTorch; a
# run's figure is its second (steady) epoch, the line's the median over rounds; the share of
# peak is the FLOP/s that rate makes (mnist's count per image, from its log: forward and both
# backward products, but the first layer's input gradient) over the peak at that thread count. Inference: the reference CNN
# trained there classifies the 10,000 test images. Scaling: per network, the rates at each
# thread count and each one's efficiency per thread (rate / (threads x the 1-thread rate)).
# Long run: the reference CNN at batch 32 for 14 epochs (1,750 steps, past the ~740th where
# denormal floats used to halve the speed) on the bundled MNIST sample, at every core; early is
# the median of epochs 2 to 4, late the median of the last three (one epoch is 2-3 seconds, and
# single epochs vary by a tenth on a shared machine), kept is late / early.
# Accuracy: with ACCURACY_EPOCHS > 0, each network then trains that many epochs on all 60,000
# training images with both, at every core, and the test accuracies are printed.
# Quality: with QUALITY=1 (the default; 0 skips its ~25 minutes), configs/fashion-best.toml is
# trained whole (its epochs, augmentation, schedule, average and best epoch) on all 60,000
# training images by both, at every core: test accuracy, training seconds (mnist's from
# model.json, PyTorch's summed epochs) and the median epoch's samples/s.
#
# usage: bench/compare.sh [FASHION_DIR]
#        (env: PYTHON, THREADS, ROUNDS, LONG_EPOCHS, ACCURACY_EPOCHS, QUALITY, MNIST)
set -euo pipefail
python=${PYTHON:-python3}
all=$(nproc)
threads=${THREADS:-$( [ "$all" -gt 1 ] && echo "1 $all" || echo 1 )}
rounds=${ROUNDS:-3}
long_epochs=${LONG_EPOCHS:-14}
accuracy_epochs=${ACCURACY_EPOCHS:-0}
quality=${QUALITY:-1}
networks=(cnn mlp seed-mlp fashion-best)

"$python" -c 'import torch, numpy' 2>/dev/null || {
  echo "bench-compare: $python cannot import torch and numpy (pip install torch numpy, or set PYTHON)" >&2
  exit 1
}
source "$(dirname "$0")/common.sh"
prepare bench-compare "${1:-/usr/share/datasets/fashion-mnist}"
cargo build --release --quiet --workspace --examples
"${CARGO_TARGET_DIR:-target}/release/examples/gemm_peak" $threads | tee "$work/peak"
subset 6400 10000 "$work/small"
cut -d, -f2- "$work/csv/test.csv" > "$work/attributes.csv"
"$MNIST" parse --input data/mnist-sample --output "$work/sample" 2> /dev/null

ours() { # network, data, epochs, threads, log, extra options
  "$MNIST" train --threads "$4" --backend cpu --config "configs/$1.toml" --data "$2" \
    --epochs "$3" --output "$work/model-$1" "${@:6}" 2> "$5"
}
theirs() { # network, data, epochs, threads, log, extra options
  "$python" bench/pytorch_reference.py --threads "$4" --config "configs/$1.toml" \
    --data "$2" ${3:+--epochs "$3"} "${@:6}" > "$5"
}
last() { # regex capturing the figure, log: the last match
  sed -n "s/$1/\1/p" "$2" | tail -n 1
}
epoch_rate='^epoch [0-9]*: .* \([0-9]*\) samples\/s$'
infer_rate='.*(\([0-9]*\) images\/s)$'
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
report() { # name, threads, file suffix, MFLOP an item
  local a b
  a=$(median < "$work/mnist-$3") b=$(median < "$work/pytorch-$3")
  echo "$a" > "$work/rate-$3-$2"
  awk -v n="$1" -v t="$2" -v a="$a" -v b="$b" -v f="$4" \
    -v p="$(awk -v t="$2" '$3 == t { print $4 }' "$work/peak")" \
    'BEGIN { printf "%s threads %s mnist %.0f pytorch %.0f ratio %.2f share_of_peak mnist %.2f pytorch %.2f\n",
             n, t, a, b, a / b, a * f / (p * 1000), b * f / (p * 1000) }'
}
train_mflop='.*parameters; \([0-9.]*\) MFLOP to train on an image.*'
infer_mflop='.*MFLOP to train on an image, \([0-9.]*\) to classify one.*'

ours cnn "$work/small" 1 1 "$work/log" --batch-size 64
theirs cnn "$work/small" 1 1 "$work/theirs.log"
echo "instruction_set mnist $(sed -n 's/^backend: cpu on flex ([0-9]* threads*, \([^,]*\),.*/\1/p' "$work/log")" \
  "pytorch $(last '^instruction set: \(.*\)$' "$work/theirs.log")"

for t in $threads; do
  rm -f "$work"/mnist-* "$work"/pytorch-*
  for round in $(seq "$rounds"); do
    for net in "${networks[@]}"; do
      ours "$net" "$work/small" 2 "$t" "$work/log"
      last "$epoch_rate" "$work/log" >> "$work/mnist-$net"
      last "$train_mflop" "$work/log" > "$work/mflop-$net"
      last "$infer_mflop" "$work/log" > "$work/infer-mflop-$net"
      infer=()
      if [ "$net" = cnn ]; then
        infer=(--infer)
        "$MNIST" infer --threads "$t" --backend cpu --model "$work/model-cnn" \
          --input "$work/attributes.csv" --output "$work/inferred" 2> "$work/log"
        last "$infer_rate" "$work/log" >> "$work/mnist-infer"
      fi
      theirs "$net" "$work/small" 2 "$t" "$work/log" "${infer[@]}"
      last "$epoch_rate" "$work/log" >> "$work/pytorch-$net"
      [ "$net" != cnn ] || last "$infer_rate" "$work/log" >> "$work/pytorch-infer"
    done
    echo "threads $t: round $round of $rounds done" >&2
  done
  for net in "${networks[@]}"; do
    report "train_${net//-/_}_samples_per_s" "$t" "$net" "$(cat "$work/mflop-$net")"
  done
  report infer_cnn_images_per_s "$t" infer "$(cat "$work/infer-mflop-cnn")"
done
for net in "${networks[@]}" infer; do
  first=${threads%% *}
  for t in $threads; do echo "$t $(cat "$work/rate-$net-$t")"; done |
    awk -v n="scaling_${net//-/_}" -v one="$(cat "$work/rate-$net-$first")" -v first="$first" '
      { rates = rates " " $1 " " $2; eff = eff sprintf(" %.2f", $2 * first / ($1 * one)) }
      END { print n " threads" rates " efficiency" eff }'
done

# The long run: each epoch's rate; early (median of epochs 2-4), late (of the last three).
rates() { sed -n "s/$epoch_rate/\1/p" "$1"; }
ours cnn "$work/sample" "$long_epochs" "$all" "$work/ours-long.log" --batch-size 32
theirs cnn "$work/sample" "$long_epochs" "$all" "$work/theirs-long.log" --batch-size 32
awk -v t="$all" \
  -v e="$(rates "$work/ours-long.log" | sed -n 2,4p | median)" \
  -v l="$(rates "$work/ours-long.log" | tail -n 3 | median)" \
  -v pe="$(rates "$work/theirs-long.log" | sed -n 2,4p | median)" \
  -v pl="$(rates "$work/theirs-long.log" | tail -n 3 | median)" \
  'BEGIN { printf "long_run_cnn_batch32 threads %s mnist early %.0f late %.0f kept %.2f pytorch early %.0f late %.0f ratio %.2f\n", t, e, l, l / e, pe, pl, l / pl }'

test_accuracy='^test: loss [0-9.]*, accuracy \([0-9.]*\)%'
if [ "$quality" = 1 ]; then
  "$MNIST" train --threads "$all" --backend cpu --config configs/fashion-best.toml \
    --data "$work/csv" --output "$work/model-best" 2> "$work/ours.log"
  theirs fashion-best "$work/csv" "" "$all" "$work/theirs.log"
  card="$work/model-best/model.json"
  awk -v t="$all" -v a="$(last "$test_accuracy" "$work/ours.log")" \
    -v s="$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["training"]["seconds"])' "$card")" \
    -v r="$(rates "$work/ours.log" | median)" \
    -v b="$(last "$test_accuracy" "$work/theirs.log")" \
    -v ps="$(sed -n 's/^epoch [0-9]*: .*; \([0-9.]*\)s, [0-9]* samples\/s$/\1/p' "$work/theirs.log" | awk '{ s += $1 } END { print s }')" \
    -v pr="$(rates "$work/theirs.log" | median)" \
    'BEGIN { printf "quality_fashion_best threads %s mnist accuracy %.2f seconds %.0f samples_per_s %.0f pytorch accuracy %.2f seconds %.0f samples_per_s %.0f difference %+.2f ratio %.2f\n", t, a, s, r, b, ps, pr, a - b, r / pr }'
fi

[ "$accuracy_epochs" -gt 0 ] || exit 0
for net in "${networks[@]}"; do
  ours "$net" "$work/csv" "$accuracy_epochs" "$all" "$work/ours.log"
  theirs "$net" "$work/csv" "$accuracy_epochs" "$all" "$work/theirs.log"
  awk -v n="accuracy_${net//-/_}" -v a="$(last "$test_accuracy" "$work/ours.log")" \
    -v b="$(last "$test_accuracy" "$work/theirs.log")" \
    'BEGIN { printf "%s mnist %.2f pytorch %.2f difference %+.2f\n", n, a, b, a - b }'
done
