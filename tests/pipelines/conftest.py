"""Shared fixtures for the pipeline tests: the project root, the specs, the mnist binary."""
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
# The DAG in dependency order; the model-secret-file variant replaces `model`.
ORDER = ["mnist-csv", "model", "select", "stats", "inference", "image"]


def load_spec(name):
    return json.loads((PIPELINES / f"{name}.json").read_text())


def all_spec_files():
    return sorted(p for p in PIPELINES.glob("*.json") if not p.name.startswith("secrets"))


@pytest.fixture(scope="session")
def mnist_bin():
    """The release binary `make test` just built."""
    if "MNIST_BIN" in os.environ:
        path = Path(os.environ["MNIST_BIN"])
    else:
        meta = json.loads(subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"],
            cwd=ROOT, check=True, capture_output=True, text=True).stdout)
        path = Path(meta["target_directory"]) / "release" / "mnist"
    assert path.is_file(), f"{path} missing: run `cargo build --release` first"
    return path
