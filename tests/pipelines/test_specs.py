"""Every pipeline spec validates against Pachyderm's own JSON Schema and against the rules
Pachyderm enforces beyond it."""
import copy
import json
import re

import jsonschema
import pytest

from conftest import ORDER, PIPELINES, all_spec_files, load_spec

SCHEMA = json.loads((PIPELINES / "schema" / "CreatePipelineRequest.schema.json").read_text())
INPUT_TYPES = {"pfs", "cross", "join", "group", "union", "cron"}


def schema_errors(spec):
    validator = jsonschema.Draft4Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(spec)]


def input_nodes(node):
    """Every node of an input tree."""
    yield node
    for kind in ("cross", "join", "group", "union"):
        for child in node.get(kind) or []:
            yield from input_nodes(child)


def rule_errors(spec):
    """Pachyderm's rules that its schema does not express."""
    errors = []
    name = spec["pipeline"]["name"]
    if not re.fullmatch(r"[a-zA-Z0-9_-]+", name) or len(name) > 51:
        errors.append(f"pipeline name {name!r}: [a-zA-Z0-9_-]+, at most 51 characters")
    names = []
    for node in input_nodes(spec["input"]):
        kinds = [k for k in INPUT_TYPES if node.get(k) is not None]
        if len(kinds) != 1:
            errors.append(f"input node {node} has {len(kinds)} input types, expected exactly one")
        leaf = node.get("pfs") or node.get("cron")
        if leaf is not None:
            names.append(leaf.get("name") or leaf.get("repo"))
    for n in names:
        if n == "out":
            errors.append("an input may not be named 'out'")
        if names.count(n) > 1:
            errors.append(f"input name {n!r} is used twice")
    return errors


def test_the_dag_and_the_variant_are_all_here():
    names = {p.stem for p in all_spec_files()}
    assert names == set(ORDER) | {"model-secret-file"}


@pytest.mark.parametrize("path", all_spec_files(), ids=lambda p: p.stem)
def test_spec_is_valid(path):
    spec = json.loads(path.read_text())
    assert schema_errors(spec) == []
    assert rule_errors(spec) == []
    # One variable names the image everywhere; the Makefile fills it in.
    assert spec["transform"]["image"] == "${MNIST_IMAGE}"
    assert spec["transform"]["cmd"][0] == "mnist"


@pytest.mark.parametrize("mutate, expected", [
    (lambda s: s.update(parallelism_spec={"constant": 2}), "Additional properties"),
    (lambda s: s["transform"].update(Cmd=["mnist"]), "Additional properties"),
    (lambda s: s["resourceLimits"]["gpu"].update(number="1"), "is not valid under any"),
    (lambda s: s["transform"]["secrets"][0].update(env_var="X"), "Additional properties"),
])
def test_the_schema_check_catches_misspelled_fields(mutate, expected):
    spec = copy.deepcopy(load_spec("model"))
    mutate(spec)
    errors = schema_errors(spec)
    assert errors and any(expected in e for e in errors), errors


@pytest.mark.parametrize("mutate, expected", [
    (lambda s: s["pipeline"].update(name="model.v2"), "pipeline name"),
    (lambda s: s["pipeline"].update(name="m" * 52), "pipeline name"),
    (lambda s: s["input"]["cross"][0]["pfs"].update(name="out"), "'out'"),
    (lambda s: s["input"]["cross"][1]["pfs"].update(name="mnist-csv"), "used twice"),
    (lambda s: s["input"]["cross"][0].update(cron={"name": "tick", "spec": "@daily"}), "input types"),
])
def test_the_rules_beyond_the_schema(mutate, expected):
    spec = copy.deepcopy(load_spec("model"))
    mutate(spec)
    assert any(expected in e for e in rule_errors(spec)), rule_errors(spec)


def test_training_asks_for_a_gpu_and_the_wandb_secret_both_ways():
    for name, secret in [("model", {"name": "wandb", "key": "key", "envVar": "WANDB_API_KEY"}),
                         ("model-secret-file", {"name": "wandb", "mountPath": "/secrets/wandb"})]:
        spec = load_spec(name)
        assert spec["pipeline"]["name"] == "model"
        assert spec["resourceLimits"]["gpu"] == {"type": "nvidia.com/gpu", "number": 1}
        assert "graphics" in spec["transform"]["env"]["NVIDIA_DRIVER_CAPABILITIES"]
        assert spec["transform"]["secrets"] == [secret]
        cmd = spec["transform"]["cmd"]
        assert cmd[cmd.index("--backend") + 1] == "auto"
        # One model directory per config: a sweep's trials are datums of their own.
        assert cmd[cmd.index("--models") + 1] == "/pfs/out"
        assert {"pfs": {"repo": "training-config", "glob": "/*"}} in spec["input"]["cross"]
        assert spec["parallelismSpec"]["constant"] > 1
        # Checkpoints (with optimizer state) go to the node's cache volume, under a directory of
        # the pipeline and datum: a retried datum continues from its own, and the model repo
        # that stats and inference download holds the model only. A datum that succeeds
        # removes them.
        checkpoints = cmd[cmd.index("--checkpoint-dir") + 1]
        assert checkpoints == "/var/cache/mnist/checkpoints/{pipeline}/{datum}"
        assert checkpoints.startswith(spec["transform"]["env"]["MNIST_CACHE_DIR"] + "/")
        assert "--resume" in cmd and "--clean-checkpoints" in cmd
        assert spec["datumTries"] > 1


GPU_STAGES = ("model", "model-secret-file", "stats", "inference")


@pytest.mark.parametrize("name", GPU_STAGES)
def test_gpu_stages_ask_for_a_gpu_and_keep_its_cache_on_the_node(name):
    spec = load_spec(name)
    cmd = spec["transform"]["cmd"]
    assert cmd[cmd.index("--backend") + 1] == "auto"
    assert spec["resourceLimits"]["gpu"] == {"type": "nvidia.com/gpu", "number": 1}
    env = spec["transform"]["env"]
    assert "graphics" in env["NVIDIA_DRIVER_CAPABILITIES"]
    # The cache directory is a node-local volume that outlives the pod: every job and datum on
    # the node reuses the kernels and autotune results of the ones before.
    patch = json.loads(spec["podPatch"])
    assert all(op["op"] == "add" for op in patch)
    volumes = {op["value"]["name"]: op["value"] for op in patch if op["path"] == "/volumes/-"}
    mounts = [op["value"] for op in patch if op["path"] == "/containers/0/volumeMounts/-"]
    assert [m["mountPath"] for m in mounts] == [env["MNIST_CACHE_DIR"]]
    volume = volumes[mounts[0]["name"]]
    assert volume["hostPath"] == {"path": "/var/cache/mnist", "type": "DirectoryOrCreate"}
    # The kubelet creates the host directory as root; the image runs as uid 1000.
    [owner] = [op["value"] for op in patch if op["path"] == "/initContainers/-"]
    assert owner["command"] == ["chown", "1000:1000", env["MNIST_CACHE_DIR"]]
    assert owner["image"] == "${MNIST_IMAGE}"
    assert owner["volumeMounts"] == mounts
    dockerfile = (PIPELINES.parent / "Dockerfile.gpu").read_text()
    assert "--uid 1000" in dockerfile


def test_every_gpu_stage_patches_the_pod_alike():
    patches = {load_spec(name)["podPatch"] for name in GPU_STAGES}
    assert len(patches) == 1


def test_secret_template():
    secret = json.loads((PIPELINES / "secrets.example.json").read_text())
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == "wandb"
    assert list(secret["stringData"]) == ["key"]
    gitignore = (PIPELINES.parent / ".gitignore").read_text().split()
    assert "/pipelines/secrets.json" in gitignore
