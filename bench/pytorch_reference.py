#!/usr/bin/env python3
"""The PyTorch reference for `make bench-compare`: trains the network of one of the project's
training configs (configs/*.toml) with PyTorch on the same CSV files, with the same
preprocessing, loss, optimizer, batch size, validation split and epochs, and prints the lines
`mnist train` prints for the same figures, so that one parser reads both:

    instruction set: AVX512
    epoch 1: train loss 0.5123, accuracy 81.20%; 7.9s, 810 samples/s
    test: loss 0.4012, accuracy 85.10%
    inferred 10000 images in 5.1s (1961 images/s)

usage: bench/pytorch_reference.py --config configs/cnn.toml --data DIR [--epochs N]
       [--batch-size N] [--threads N] [--device cpu|cuda] [--infer]
DIR holds train.csv and test.csv as `mnist parse` writes them (label, then 784 pixels). With
`--device cuda` the whole data set is put on the GPU once, as `mnist train` does, and every
timing waits for the GPU to finish.
Needs torch and numpy (`pip install torch numpy`); CI does not run it.
"""
import argparse
import math
import sys
import time
import tomllib

import numpy as np
import torch
from torch import nn

CLASSES = 10
EVAL_BATCH = 1024


def activation(name):
    layers = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
              "identity": nn.Identity}
    if name not in layers:
        sys.exit(f"pytorch_reference: activation {name!r} is not mapped")
    return layers[name]()


def network(model, side):
    """The PyTorch twin of model/src/{mlp,cnn}.rs for one [model] table."""
    act = model.get("activation", "relu")
    if model["kind"] == "mlp":
        layers, width = [], side * side
        for out in model["hidden"]:
            layers += [nn.Linear(width, out), activation(act), nn.Dropout(model.get("dropout", 0.0))]
            width = out
        layers += [nn.Linear(width, CLASSES), activation(model.get("output_activation", "identity"))]
        return nn.Sequential(*layers)
    kernel, pool = model.get("kernel_size", 3), max(model.get("pool", 2), 1)
    layers, channels = [nn.Unflatten(1, (1, side, side))], 1
    for out in model["channels"]:
        layers += [nn.Conv2d(channels, out, kernel), activation(act)]
        channels = out
    features = (side - len(model["channels"]) * (kernel - 1)) // pool
    layers += [nn.MaxPool2d(pool), nn.Dropout(model.get("conv_dropout", 0.0)), nn.Flatten()]
    width = channels * features * features
    for out in model["hidden"]:
        layers += [nn.Linear(width, out), activation(act), nn.Dropout(model.get("dropout", 0.0))]
        width = out
    return nn.Sequential(*layers, nn.Linear(width, CLASSES))


def preprocess(kind, pixels):
    x = pixels.float() / 255.0
    if kind["kind"] == "binarize":
        return (pixels > 0).float()
    if kind["kind"] == "standardize":
        return (x - kind["mean"]) / kind["std"]
    return x


def optimizer(config, params):
    kind, lr = config["kind"], config["lr"]
    decay = config.get("weight_decay", 0.0)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.get("momentum", 0.0),
                               nesterov=config.get("nesterov", False), weight_decay=decay)
    betas = (config.get("beta1", 0.9), config.get("beta2", 0.999))
    eps = config.get("epsilon", 1e-8)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=decay)
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps,
                             weight_decay=config.get("weight_decay", 1e-2))


def schedule(config, base):
    """The learning rate at a 0-based step, as src/formats/config.rs's Schedule::lr computes it."""
    kind = config.get("kind", "constant")
    if kind == "constant":
        return lambda step, per_epoch, total: base
    if kind == "step":
        every, gamma = max(config["every_epochs"], 1), config["gamma"]
        return lambda step, per_epoch, total: base * gamma ** ((step // max(per_epoch, 1)) // every)
    if kind == "cosine":
        low = config.get("min_lr", 0.0)
        return lambda step, per_epoch, total: low + (base - low) * 0.5 * (
            1 + math.cos(math.pi * step / max(total, 1)))
    sys.exit(f"pytorch_reference: schedule {kind!r} is not mapped")


def loss_fn(kind):
    if kind == "squared_error":
        # Half the summed squared error per example, as `mnist train` computes it.
        return lambda out, y: 0.5 * ((out - nn.functional.one_hot(y, CLASSES).float()) ** 2).sum(1).mean()
    return nn.functional.cross_entropy


def load(path):
    try:
        data = np.loadtxt(path, delimiter=",", dtype=np.uint8, ndmin=2)
    except (OSError, ValueError) as err:
        sys.exit(f"pytorch_reference: {path}: {err}")
    return torch.from_numpy(data[:, 1:].copy()), torch.from_numpy(data[:, 0].astype(np.int64))


def evaluate(model, x, y, loss):
    model.eval()
    with torch.no_grad():
        outputs = torch.cat([model(x[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])
    model.train()
    return loss(outputs, y).item(), (outputs.argmax(1) == y).float().mean().item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--infer", action="store_true", help="also time inference on test.csv")
    args = parser.parse_args()
    with open(args.config, "rb") as file:
        config = tomllib.load(file)
    training = config["training"]
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    torch.set_num_threads(args.threads)
    torch.manual_seed(training.get("seed", 42))
    if args.device == "cpu":
        print(f"instruction set: {torch.backends.cpu.get_cpu_capability()}", flush=True)

    pixels, labels = load(f"{args.data}/train.csv")
    test_pixels, test_labels = load(f"{args.data}/test.csv")
    pixels, labels = pixels.to(device), labels.to(device)
    test_pixels, test_labels = test_pixels.to(device), test_labels.to(device)
    inputs = preprocess(config["preprocess"], pixels)
    held = round(len(inputs) * training.get("validation_split", 0.0))
    order = torch.randperm(len(inputs), device=device)
    train_x, train_y = inputs[order[held:]], labels[order[held:]]

    model = network(config["model"], int(pixels.shape[1] ** 0.5)).to(device)
    opt = optimizer(config["optimizer"], model.parameters())
    lr_at = schedule(config.get("schedule", {}), config["optimizer"]["lr"])
    loss = loss_fn(training.get("loss", "cross_entropy"))
    batch = args.batch_size or training["batch_size"]
    epochs = args.epochs or training["epochs"]
    per_epoch = math.ceil(len(train_x) / batch)
    step = 0
    model.train()
    for epoch in range(1, epochs + 1):
        sync()
        start = time.perf_counter()
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for idx in torch.randperm(len(train_x), device=device).split(batch):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, per_epoch, per_epoch * epochs)
            step += 1
            x, y = train_x[idx], train_y[idx]
            out = model(x)
            step_loss = loss(out, y)
            opt.zero_grad()
            step_loss.backward()
            opt.step()
            total_loss += step_loss.detach() * len(idx)
            correct += (out.detach().argmax(1) == y).sum()
        n, total_loss, correct = len(train_x), total_loss.item(), correct.item()
        seconds = time.perf_counter() - start
        print(f"epoch {epoch}: train loss {total_loss / n:.4f}, "
              f"accuracy {100 * correct / n:.2f}%; {seconds:.1f}s, "
              f"{n / seconds:.0f} samples/s", flush=True)

    test_x = preprocess(config["preprocess"], test_pixels)
    test_loss, accuracy = evaluate(model, test_x, test_labels, loss)
    print(f"test: loss {test_loss:.4f}, accuracy {100 * accuracy:.2f}%")
    if args.infer:
        model.eval()
        sync()
        start = time.perf_counter()
        with torch.no_grad():
            # As `mnist infer` does: preprocess the raw pixels, predict, in batches.
            x = preprocess(config["preprocess"], test_pixels)
            torch.cat([model(x[i:i + EVAL_BATCH]).argmax(1)
                       for i in range(0, len(x), EVAL_BATCH)]).cpu()
        seconds = time.perf_counter() - start
        print(f"inferred {len(x)} images in {seconds:.1f}s ({len(x) / seconds:.0f} images/s)")


if __name__ == "__main__":
    main()
