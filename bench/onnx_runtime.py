"""ONNX Runtime on an exported model: images/s over an attribute CSV (pixels per row), in
batches as `mnist infer` takes them, on as many threads; the median of three passes.

usage: onnx_runtime.py MODEL.onnx ATTRIBUTES.csv THREADS
"""
import statistics
import sys
import time

import numpy as np
import onnxruntime

BATCH = 1024  # `mnist infer`'s batch


def main(model, attributes, threads):
    pixels = np.loadtxt(attributes, delimiter=",", dtype=np.float32).reshape(-1, 1, 28, 28)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        for start in range(0, len(pixels), BATCH):
            session.run(["probabilities"], {"pixels": pixels[start:start + BATCH]})
        rates.append(len(pixels) / (time.perf_counter() - started))
    print(f"{statistics.median(rates):.0f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
