"""`mnist export` against the runtimes it writes for: ONNX Runtime on model.onnx, and PyTorch on
model.safetensors loaded into model.py's module, each agreeing with `mnist infer` on the 1,000
sample test digits, for a fully connected network, a CNN and a batch-normalized CNN that
averages the logits of 10 views of each image."""
import importlib.util
import json
import os
import subprocess

import numpy as np
import pytest

from conftest import ROOT

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

CNN = (ROOT / "configs" / "smoke.toml").read_text()
MLP = """
[model]
kind = "mlp"
hidden = [64, 32]
activation = "tanh"
output_activation = "sigmoid"

[preprocess]
kind = "binarize"

[training]
epochs = 1
batch_size = 32

[optimizer]
kind = "sgd"
lr = 0.1
"""
# Padded convolutions, a pool after each, batch normalization, standardized inputs, class
# names, test-time augmentation (the logits of 10 views averaged); the config asks training for
# the exports itself.
BATCH_NORM = """
[model]
kind = "cnn"
channels = [8, 16]
padding = 1
pool_after = [1, 2]
batch_norm = true
hidden = [32]
dropout = 0.2

[preprocess]
kind = "standardize"
mean = 0.1307
std = 0.3081

[training]
epochs = 1
batch_size = 64
validation_split = 0.1

[optimizer]
kind = "adam"
lr = 3e-3

[data]
classes = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

[tta]
flip = true
shift = 1

[export]
formats = ["onnx", "safetensors"]
"""
CONFIGS = {"mlp": MLP, "cnn": CNN, "batch_norm": BATCH_NORM}
# A session of ONNX Runtime or PyTorch agrees with `mnist infer` on this share of the classes
# at least, and on every probability within this.
SAME_CLASS = 0.999
PROBABILITY = 1e-4


def run(mnist_bin, *args):
    env = dict(os.environ, WANDB_MODE="disabled")
    done = subprocess.run([str(mnist_bin), *map(str, args)], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.fixture(scope="session")
def digits(mnist_bin, tmp_path_factory):
    """The sample's 1,000 test digits as an unlabelled pixel CSV, and their labels."""
    work = tmp_path_factory.mktemp("digits")
    run(mnist_bin, "parse", "--input", ROOT / "data" / "mnist-sample", "--output", work)
    rows = np.loadtxt(work / "test.csv", delimiter=",", dtype=np.int64)
    pixels = work / "pixels.csv"
    np.savetxt(pixels, rows[:, 1:], fmt="%d", delimiter=",")
    return pixels, rows[:, 0]


@pytest.fixture(scope="session", params=list(CONFIGS))
def exported(request, mnist_bin, digits, tmp_path_factory):
    """A model trained from one config, its exports and `mnist infer`'s probabilities."""
    work = tmp_path_factory.mktemp(request.param)
    config = work / "config.toml"
    config.write_text(CONFIGS[request.param])
    model = work / "model"
    run(mnist_bin, "train", "--backend", "cpu", "--config", config, "--output", model)
    exports = work / "exports"
    run(mnist_bin, "export", "--model", model, "--output", exports)
    run(mnist_bin, "infer", "--backend", "cpu", "--model", model, "--input", digits[0],
        "--output", work / "inferred", "--probabilities")
    rows = np.loadtxt(work / "inferred" / "pixels.csv", delimiter=",")
    pixels = rows[:, :784].astype(np.float32).reshape(-1, 1, 28, 28)
    classes = rows[:, 784].astype(np.int64)
    return {"name": request.param, "model": model, "exports": exports, "pixels": pixels,
            "classes": classes, "probabilities": rows[:, 785:]}


def agree(name, probabilities, model):
    same = (probabilities.argmax(1) == model["classes"]).mean()
    worst = np.abs(probabilities - model["probabilities"]).max()
    print(f"{model['name']} {name}: same class {same:.4f}, largest difference {worst:.2e}")
    assert same >= SAME_CLASS, name
    assert worst <= PROBABILITY, name


def test_onnx_runtime_agrees_with_mnist_infer_at_any_batch_size(exported):
    path = exported["exports"] / "model.onnx"
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 13
    pixels = model.graph.input[0]
    dims = pixels.type.tensor_type.shape.dim
    assert pixels.name == "pixels" and dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == [1, 28, 28]
    props = {p.key: p.value for p in model.metadata_props}
    assert "raw pixel values 0..255" in props["input"]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in (1, 37, 1000):
        images = exported["pixels"]
        parts = [session.run(["probabilities"], {"pixels": images[i:i + batch]})[0]
                 for i in range(0, len(images), batch)]
        agree(f"onnx runtime, batch {batch}", np.concatenate(parts), exported)


def test_pytorch_loads_the_safetensors_strictly_and_agrees_with_mnist_infer(exported):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: `make setup` does")
    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("exported", exported["exports"] / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.Net()
    net.load_state_dict(load_file(exported["exports"] / "model.safetensors"), strict=True)
    with torch.no_grad():
        probabilities = net.eval()(torch.from_numpy(exported["pixels"])).softmax(1).numpy()
    agree("pytorch", probabilities, exported)
    if exported["name"] == "batch_norm":
        assert module.CLASSES[:2] == ["zero", "one"]


def test_training_writes_the_exports_the_config_asks_for(exported):
    written = sorted(p.name for p in exported["model"].glob("model.*"))
    if exported["name"] != "batch_norm":
        assert written == ["model.bpk", "model.json"]
        return
    assert written == ["model.bpk", "model.json", "model.onnx", "model.py", "model.safetensors"]
    for name in ["model.onnx", "model.py", "model.safetensors"]:
        assert (exported["model"] / name).read_bytes() == (exported["exports"] / name).read_bytes()
    props = {p.key: p.value for p in onnx.load(exported["model"] / "model.onnx").metadata_props}
    assert props["classes"].startswith('["zero","one",')
    assert '"kind":"standardize"' in props["preprocess"]
    assert props["tta"] == '{"flip":true,"shift":1}'
    card = json.loads((exported["model"] / "model.json").read_text())
    assert card["config"]["tta"] == {"flip": True, "shift": 1}
    assert 0 < card["metrics"]["test_accuracy_single_view"] <= 1
