"""Shared fixtures for the pipeline tests: the project root and the specs."""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
# The DAG in dependency order; the model-secret-file variant replaces `model`.
ORDER = ["mnist-csv", "model", "select", "stats", "inference", "image"]


def load_spec(name):
    return json.loads((PIPELINES / f"{name}.json").read_text())


def all_spec_files():
    return sorted(p for p in PIPELINES.glob("*.json") if not p.name.startswith("secrets"))


