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
import copy
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


class BatchNorm1d(nn.BatchNorm1d):
    """PyTorch's, taking a training batch of one as norm.rs does, where PyTorch refuses it: the
    batch's variance is 0, so each feature normalizes to its shift and passes no gradient back;
    the running variance moves toward that 0 (Burn's statistics are the biased ones)."""

    def forward(self, x):
        if not (self.training and x.shape[0] == 1):
            return super().forward(x)
        with torch.no_grad():
            self.running_mean.lerp_(x[0], self.momentum)
            self.running_var.mul_(1.0 - self.momentum)
            self.num_batches_tracked += 1
        return self.bias.expand_as(x)


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
    pad, norm = model.get("padding", 0), model.get("batch_norm", False)
    pool_after = model.get("pool_after", [len(model["channels"])])
    layers, channels, features = [nn.Unflatten(1, (1, side, side))], 1, side
    # As cnn.rs: convolution, its max-pool where pool_after says, batch norm, activation.
    for index, out in enumerate(model["channels"], start=1):
        layers.append(nn.Conv2d(channels, out, kernel, padding=pad))
        features = features + 2 * pad - (kernel - 1)
        if pool > 1 and index in pool_after:
            layers.append(nn.MaxPool2d(pool))
            features //= pool
        if norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(activation(act))
        channels = out
    layers += [nn.Dropout(model.get("conv_dropout", 0.0)), nn.Flatten()]
    width = channels * features * features
    for out in model["hidden"]:
        layers.append(nn.Linear(width, out))
        if norm:
            layers.append(BatchNorm1d(out))
        layers += [activation(act), nn.Dropout(model.get("dropout", 0.0))]
        width = out
    return nn.Sequential(*layers, nn.Linear(width, CLASSES))


def augment(config, pixels, side, generator):
    """[augment] on a batch of raw pixels [n, side*side] (0 is background), as
    src/stages/train/augment.rs does it: shift (background fill), mirror, erase."""
    if not config:
        return pixels
    n = len(pixels)
    x = pixels.view(n, side, side)
    shift = config.get("shift", 0)
    if shift:
        padded = nn.functional.pad(x, (shift, shift, shift, shift))
        offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator)
        rows = (torch.arange(side) + offsets[:, :1])[:, :, None]
        cols = (torch.arange(side) + offsets[:, 1:])[:, None, :]
        x = padded[torch.arange(n)[:, None, None], rows, cols]
    if config.get("flip", False):
        mirror = torch.rand(n, generator=generator) < 0.5
        x = torch.where(mirror[:, None, None], x.flip(-1), x)
    erase = config.get("erase", 0.0)
    if erase:
        x = x.clone()
        for i in torch.nonzero(torch.rand(n, generator=generator) < erase).flatten().tolist():
            area = side * side * (0.02 + 0.23 * torch.rand(1, generator=generator).item())
            aspect = math.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3))
                              * torch.rand(1, generator=generator).item())
            eh, ew = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < eh <= side and 0 < ew <= side:
                top = torch.randint(0, side - eh + 1, (1,), generator=generator).item()
                left = torch.randint(0, side - ew + 1, (1,), generator=generator).item()
                x[i, top:top + eh, left:left + ew] = 0
    return x.reshape(n, side * side)


def views(config, pixels, side):
    """[tta]'s views of raw pixels [n, side*side] (0 is background), the image itself first, in
    the order of model/src/views.rs: each move (none, up, down, left, right), then mirrored."""
    shift = config.get("shift", 0)
    moves = [(0, 0)] + ([(-shift, 0), (shift, 0), (0, -shift), (0, shift)] if shift else [])
    padded = nn.functional.pad(pixels.view(-1, side, side), (shift,) * 4)
    each = []
    for down, right in moves:
        view = padded[:, shift - down:shift - down + side, shift - right:shift - right + side]
        each += [view, view.flip(-1)] if config.get("flip", False) else [view]
    return [view.reshape(-1, side * side) for view in each]


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
        low, warmup_epochs = config.get("min_lr", 0.0), config.get("warmup_epochs", 0.0)

        def cosine(step, per_epoch, total):
            warmup = round(warmup_epochs * per_epoch)
            if step < warmup:
                return base * (step + 1) / warmup
            progress = (step - warmup) / max(total - warmup, 1)
            return low + (base - low) * 0.5 * (1 + math.cos(math.pi * progress))
        return cosine
    if kind == "one_cycle":
        # torch.optim.lr_scheduler.OneCycleLR's cosine annealing, as Schedule::OneCycle.
        pct, div = config.get("pct_start", 0.3), config.get("div_factor", 25.0)
        final = config.get("final_div_factor", 1e4)

        def one_cycle(step, per_epoch, total):
            initial, last = base / div, base / div / final
            peak = max(pct * total - 1, 1)
            end = max(total - 1, peak + 1)
            between = lambda a, b, t: b + (a - b) * 0.5 * (1 + math.cos(math.pi * t))
            if step <= peak:
                return between(initial, base, step / peak)
            return between(base, last, min((step - peak) / (end - peak), 1))
        return one_cycle
    sys.exit(f"pytorch_reference: schedule {kind!r} is not mapped")


class Average:
    """training.ema_decay: the moving average of the weights and buffers, as
    src/stages/train/ema.rs keeps it."""

    def __init__(self, model, decay):
        self.model, self.decay = copy.deepcopy(model), decay

    def update(self, model, step):
        decay = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for mine, theirs in zip(self.model.state_dict().values(), model.state_dict().values()):
                if mine.dtype.is_floating_point:
                    mine.mul_(decay).add_(theirs, alpha=1 - decay)


def loss_fn(kind, smoothing=0.0):
    if kind == "squared_error":
        # Half the summed squared error per example, as `mnist train` computes it.
        return lambda out, y: 0.5 * ((out - nn.functional.one_hot(y, CLASSES).float()) ** 2).sum(1).mean()
    return lambda out, y: nn.functional.cross_entropy(out, y, label_smoothing=smoothing)


def load(path):
    try:
        data = np.loadtxt(path, delimiter=",", dtype=np.uint8, ndmin=2)
    except (OSError, ValueError) as err:
        sys.exit(f"pytorch_reference: {path}: {err}")
    return torch.from_numpy(data[:, 1:].copy()), torch.from_numpy(data[:, 0].astype(np.int64))


def logits(model, x):
    model.eval()
    with torch.no_grad():
        outputs = torch.cat([model(x[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])
    model.train()
    return outputs


def evaluate(model, x, y, loss):
    outputs = logits(model, x)
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
    held = round(len(pixels) * training.get("validation_split", 0.0))
    order = torch.randperm(len(pixels), device=device)
    train_pixels, train_y = pixels[order[held:]], labels[order[held:]]
    valid_x = preprocess(config["preprocess"], pixels[order[:held]])
    valid_y = labels[order[:held]]
    side = int(pixels.shape[1] ** 0.5)
    augmenting = config.get("augment", {})
    generator = torch.Generator().manual_seed(training.get("seed", 42))
    train_x = preprocess(config["preprocess"], train_pixels)

    model = network(config["model"], side).to(device)
    opt = optimizer(config["optimizer"], model.parameters())
    lr_at = schedule(config.get("schedule", {}), config["optimizer"]["lr"])
    loss = loss_fn(training.get("loss", "cross_entropy"))
    train_loss = loss_fn(training.get("loss", "cross_entropy"), training.get("label_smoothing", 0.0))
    decay = training.get("ema_decay", 0.0)
    average = Average(model, decay) if decay > 0 else None
    keep_best = training.get("keep", "best") == "best" and held > 0
    patience = training.get("patience")
    best = None  # (accuracy, epoch, state)
    batch = args.batch_size or training["batch_size"]
    epochs = args.epochs or training["epochs"]
    per_epoch = math.ceil(len(train_x) / batch)
    step = 0
    model.train()
    for epoch in range(1, epochs + 1):
        if patience and best and epoch - 1 - best[1] >= patience:
            break
        sync()
        start = time.perf_counter()
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for idx in torch.randperm(len(train_x), device=device).split(batch):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, per_epoch, per_epoch * epochs)
            step += 1
            if augmenting and epoch + augmenting.get("plain_epochs", 0) <= epochs:
                raw = augment(augmenting, train_pixels[idx].cpu(), side, generator).to(device)
                x = preprocess(config["preprocess"], raw)
            else:
                x = train_x[idx]
            y = train_y[idx]
            out = model(x)
            step_loss = train_loss(out, y)
            opt.zero_grad()
            step_loss.backward()
            opt.step()
            if average:
                average.update(model, step)
            total_loss += step_loss.detach() * len(idx)
            correct += (out.detach().argmax(1) == y).sum()
        n, total_loss, correct = len(train_x), total_loss.item(), correct.item()
        seconds = time.perf_counter() - start
        evaluated = average.model if average else model
        validation = ""
        if held:
            valid_loss, valid_accuracy = evaluate(evaluated, valid_x, valid_y, loss)
            validation = f", validation loss {valid_loss:.4f}, accuracy {100 * valid_accuracy:.2f}%"
            if keep_best and (best is None or valid_accuracy > best[0]):
                best = (valid_accuracy, epoch, copy.deepcopy(evaluated.state_dict()))
        print(f"epoch {epoch}: train loss {total_loss / n:.4f}, "
              f"accuracy {100 * correct / n:.2f}%{validation}; {seconds:.1f}s, "
              f"{n / seconds:.0f} samples/s", flush=True)

    model = average.model if average else model
    if best:
        model.load_state_dict(best[2])
        print(f"keeping epoch {best[1]} (validation accuracy {100 * best[0]:.2f}%)")
    # Test-time augmentation, as mnist's test figures: the mean of the views' logits.
    each = [logits(model, preprocess(config["preprocess"], view))
            for view in views(config.get("tta", {}), test_pixels, side)]
    averaged = sum(each[1:], each[0]) / len(each)
    accuracy = (averaged.argmax(1) == test_labels).float().mean().item()
    single = ""
    if len(each) > 1:
        own = (each[0].argmax(1) == test_labels).float().mean().item()
        single = f" ({100 * own:.2f}% from each image's own view alone)"
    print(f"test: loss {loss(averaged, test_labels).item():.4f}, accuracy {100 * accuracy:.2f}%"
          f"{single}")
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
