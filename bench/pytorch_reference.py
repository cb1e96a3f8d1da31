#!/usr/bin/env python3
"""PyTorch reference for `make bench`: trains the same networks on the same CSV files and
prints the same figures (`train_<net>_samples_per_s`, `infer_cnn_images_per_s`), so both can
run side by side on one machine. Not run by CI (it needs `pip install torch numpy`).

usage: bench/pytorch_reference.py DATA_DIR [--threads N]
DATA_DIR holds train.csv and test.csv as `mnist parse` writes them.
"""
import argparse
import time

import numpy as np
import torch
from torch import nn

NETWORKS = {
    # name: (builder, preprocess, loss, optimizer, batch size)
    "seed_mlp": (
        lambda: nn.Sequential(nn.Linear(784, 387), nn.Sigmoid(), nn.Linear(387, 10), nn.Sigmoid()),
        lambda x: (x > 0).float(),
        "squared_error",
        lambda p: torch.optim.SGD(p, lr=0.2),
        1,
    ),
    "mlp": (
        lambda: nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)),
        lambda x: x / 255.0,
        "cross_entropy",
        lambda p: torch.optim.Adam(p, lr=1e-3),
        64,
    ),
    "cnn": (
        lambda: nn.Sequential(
            nn.Unflatten(1, (1, 28, 28)),
            nn.Conv2d(1, 32, 3), nn.ReLU(),
            nn.Conv2d(32, 64, 3), nn.ReLU(),
            nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
            nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(128, 10),
        ),
        lambda x: (x / 255.0 - 0.1307) / 0.3081,
        "cross_entropy",
        lambda p: torch.optim.Adam(p, lr=1e-3),
        64,
    ),
}


def load(path, rows):
    data = np.loadtxt(path, delimiter=",", dtype=np.uint8, max_rows=rows)
    return torch.from_numpy(data[:, 1:].astype(np.float32)), torch.from_numpy(data[:, 0].astype(np.int64))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rows", type=int, default=6400)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    x_train, y_train = load(f"{args.data}/train.csv", args.rows)
    x_test, y_test = load(f"{args.data}/test.csv", 1000)
    for name, (build, preprocess, loss_kind, optimizer, batch) in NETWORKS.items():
        model = build()
        opt = optimizer(model.parameters())
        inputs = preprocess(x_train)
        rows = len(inputs) if name != "cnn" else len(inputs) // 2
        order = torch.randperm(rows)
        model.train()
        start = time.perf_counter()
        for i in range(0, rows, batch):
            idx = order[i:i + batch]
            out = model(inputs[idx])
            if loss_kind == "cross_entropy":
                loss = nn.functional.cross_entropy(out, y_train[idx])
            else:
                target = nn.functional.one_hot(y_train[idx], 10).float()
                loss = 0.5 * ((out - target) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - start
        print(f"torch_train_{name}_samples_per_s {rows / seconds:.0f}")
        if name == "cnn":
            model.eval()
            with torch.no_grad():
                test = preprocess(x_test)
                start = time.perf_counter()
                predictions = torch.cat([model(test[i:i + 1024]).argmax(1) for i in range(0, len(test), 1024)])
                seconds = time.perf_counter() - start
            print(f"torch_infer_cnn_images_per_s {len(test) / seconds:.0f}")
            print(f"torch_cnn_test_accuracy {(predictions == y_test).float().mean().item():.4f}")


if __name__ == "__main__":
    main()
