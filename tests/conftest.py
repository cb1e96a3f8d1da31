"""Fixtures every Python test shares: the mnist binary that `make test` built."""
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
