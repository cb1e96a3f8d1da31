#!/usr/bin/env python3
"""Per-operation breakdown of a training step from `perf script` output (see bench/profile.sh).

Each sample taken inside the training loop (`mnist::stages::train::trainer::Run::epoch`) is charged to the first
frame, from the loop downwards, that names a layer's forward pass, an autodiff backward step or
another part of the step; the rest is "other". Prints one line per operation:
milliseconds per step and share of the step.

usage: perf script -F comm,period,ip,sym | bench/profile_ops.py --steps N --seconds S
"""
import argparse
import re
import sys
from collections import Counter

LOOP = "train::trainer::Run::epoch"

# (label, pattern), tried in order on each frame from the training loop down.
OPERATIONS = [
    ("conv+max-pool forward", r"conv2d_max_pool2d|Kernels>::conv_pool_forward"),
    ("conv+max-pool backward", r"Kernels>::conv_pool_backward|cpu::conv::backward_pooled"),
    ("conv forward", r"Conv2d::forward|model::layers::conv2d|Kernels>::conv_forward"),
    ("conv backward",
     r"Conv2D\w* as burn_autodiff::ops::backward::Backward|Kernels>::conv_backward|cpu::conv::backward"),
    ("batch norm forward",
     r"Kernels>::(norm_forward|batch_statistics)|cpu::norm::(forward|statistics)"),
    ("batch norm backward", r"Kernels>::norm_backward|cpu::norm::backward"),
    ("max-pool forward", r"MaxPool2d::forward"),
    ("max-pool backward", r"MaxPool2D\w* as burn_autodiff"),
    ("dropout forward", r"Dropout::forward|model::layers::dropout|cpu::dropout::dropout"),
    ("dropout backward", r"cpu::DropoutBackward"),
    ("linear forward", r"Linear::forward|model::layers::linear|Kernels>::linear_forward"),
    ("linear backward",
     r"Matmul as burn_autodiff::ops::backward::Backward|Kernels>::linear_backward|cpu::linear::backward"),
    ("activation forward", r"Activation::forward|activation::relu|Sigmoid::forward|layers::activate"),
    ("activation backward",
     r"(Relu|Sigmoid|Tanh) as burn_autodiff::ops::backward::Backward|cpu::ReluBackward"),
    ("loss forward", r"report::evaluate::loss"),
    ("optimizer step", r"ModuleOptimizer::step|burn_optim::"),
    ("gradient collection", r"GradientsParams::from_grads"),
    ("augmentation", r"train::augment::"),
    ("batch assembly", r"report::evaluate::index_tensor|Tensor<_>>::select|float_select"),
    ("running metrics", r"train::trainer::Window::"),
]
# Tried when no frame matches the above: what is left of a backward pass.
FALLBACKS = [
    ("other backward steps", r"as burn_autodiff::ops::backward::Backward"),
    ("autodiff graph walk", r"AutodiffServer::|burn_autodiff::runtime"),
]
TIERS = [[(label, re.compile(pattern)) for label, pattern in tier]
         for tier in (OPERATIONS, FALLBACKS)]


def samples(lines):
    """(period, frames from the outermost) for each sample in `perf script` output."""
    period, frames = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if period is not None:
                yield period, frames[::-1]
            period, frames = None, []
        elif not line.startswith("\t"):
            period = int(line.split()[-1])
        else:
            frames.append(line.strip().split(" ", 1)[-1])
    if period is not None:
        yield period, frames[::-1]


def classify(frames):
    """The operation a sample belongs to, or None outside the training loop."""
    try:
        start = next(i for i, frame in enumerate(frames) if LOOP in frame)
    except StopIteration:
        return None
    for tier in TIERS:
        for frame in frames[start + 1:]:
            for label, pattern in tier:
                if pattern.search(frame):
                    return label
    return "other (allocation, dispatch)"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True, help="training steps profiled")
    parser.add_argument("--seconds", type=float, required=True, help="their wall time")
    parser.add_argument("--detail", metavar="OPERATION",
                        help="also list the functions the time of OPERATION is spent in")
    args = parser.parse_args()
    totals, leaves = Counter(), Counter()
    for period, frames in samples(sys.stdin):
        label = classify(frames)
        if label:
            totals[label] += period
        if args.detail and label == args.detail:
            leaves[frames[-1][:100]] += period
    everything = sum(totals.values())
    if not everything:
        sys.exit("profile_ops: no samples inside the training loop")
    step_ms = 1000 * args.seconds / args.steps
    print(f"{'operation':<30} {'ms/step':>8} {'share':>6}")
    for label, period in totals.most_common():
        share = period / everything
        print(f"{label:<30} {share * step_ms:8.2f} {100 * share:5.1f}%")
    print(f"{'step':<30} {step_ms:8.2f} 100.0%")
    for leaf, period in leaves.most_common(15):
        print(f"  {100 * period / totals[args.detail]:5.1f}% {leaf}")


if __name__ == "__main__":
    main()
