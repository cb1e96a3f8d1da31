"""A local rehearsal of the whole DAG, run from the specs themselves: for each pipeline in
order, its transform.cmd runs once per datum in a /pfs-like tree (inputs by name, `out`), with
the environment Pachyderm would set, and its outputs become the repo the next stage reads.
A wrong flag or path in a spec fails here."""
import itertools
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import ORDER, ROOT, load_spec
from fake_wandb import FakeWandb

SECRET = {"key": "rehearsal-secret-value"}


def datums(node, repos):
    """The datums of an input tree: lists of (input name, repo, entry or None for the root)."""
    if "pfs" in node:
        pfs = node["pfs"]
        name, repo = pfs.get("name") or pfs["repo"], pfs["repo"]
        if pfs["glob"] == "/":
            return [[(name, repo, None)]]
        assert pfs["glob"] == "/*", f"rehearsal knows globs / and /*, not {pfs['glob']}"
        return [[(name, repo, entry)] for entry in sorted(os.listdir(repos[repo]))]
    if "cross" in node:
        parts = [datums(child, repos) for child in node["cross"]]
        return [sum(combo, []) for combo in itertools.product(*parts)]
    if "union" in node:
        return sum((datums(child, repos) for child in node["union"]), [])
    raise AssertionError(f"rehearsal does not handle input {node}")


def node_volumes(spec, work):
    """The spec's hostPath volumes (from its podPatch) as directories of one rehearsal node, by
    their mount path in the container."""
    patch = json.loads(spec.get("podPatch", "[]"))
    volumes = {op["value"]["name"]: op["value"] for op in patch if op["path"] == "/volumes/-"}
    return {op["value"]["mountPath"]: work / "node" / volumes[op["value"]["name"]]["hostPath"][
        "path"].lstrip("/") for op in patch if op["path"] == "/containers/0/volumeMounts/-"}


def in_container(value, pfs, volumes):
    """A path as the container sees it, mapped to where the rehearsal keeps it: /pfs, the
    pod's scratch space /tmp (an emptyDir) beside it, and the node's volumes."""
    for root in ("/pfs", "/tmp"):
        if value == root or value.startswith(root + "/"):
            return str(pfs.parent / root.lstrip("/")) + value[len(root):]
    for mount, local in volumes.items():
        if value == mount or value.startswith(mount + "/"):
            return str(local) + value[len(mount):]
    return value


def run_pipeline(spec, repos, commits, mnist_bin, work, wandb_url):
    name = spec["pipeline"]["name"]
    output = work / "repos" / name
    output.mkdir(parents=True)
    job = uuid.uuid4().hex
    for index, datum in enumerate(datums(spec["input"], repos)):
        pfs = work / "workers" / name / str(index) / "pfs"
        (pfs / "out").mkdir(parents=True)
        # The worker's environment: the runner's, less any W&B settings of its own.
        env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
        volumes = node_volumes(spec, work)
        env.update({k: in_container(v, pfs, volumes)
                    for k, v in spec["transform"].get("env", {}).items()})
        env.update(PPS_PIPELINE_NAME=name, PPS_PROJECT_NAME="default", PACH_JOB_ID=job,
                   PACH_DATUM_ID=f"{index:064x}", PACH_OUTPUT_COMMIT_ID=uuid.uuid4().hex,
                   PPS_SPEC_COMMIT=uuid.uuid4().hex)
        for input_name, repo, entry in datum:
            source = repos[repo]
            if entry is None:
                shutil.copytree(source, pfs / input_name)
            else:
                (pfs / input_name).mkdir()
                copy = shutil.copytree if (source / entry).is_dir() else shutil.copy2
                copy(source / entry, pfs / input_name / entry)
            env[f"{input_name}_COMMIT"] = commits[repo]
        # W&B goes to a fake server on loopback; the secret `wandb` reaches the stage as the
        # spec says: as an environment variable, or as files under mountPath (mapped here, as
        # /pfs is, through the binary's key-file setting).
        env["WANDB_BASE_URL"] = wandb_url
        env["HOME"] = str(work)
        for secret in spec["transform"].get("secrets", []):
            if "envVar" in secret:
                env[secret["envVar"]] = SECRET[secret["key"]]
            if "mountPath" in secret:
                mount = work / "workers" / name / str(index) / secret["mountPath"].lstrip("/")
                mount.mkdir(parents=True)
                for key, value in SECRET.items():
                    (mount / key).write_text(value)
                env["MNIST_WANDB_KEY_FILE"] = str(mount / "key")
        cmd = [str(mnist_bin) if arg == "mnist" else in_container(arg, pfs, volumes)
               for arg in spec["transform"]["cmd"]]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{name} datum {index}: {cmd}\n{result.stderr}"
        assert SECRET["key"] not in result.stderr + result.stdout
        # Outputs of all datums merge into the output commit; two datums writing one path is
        # an error in Pachyderm too.
        for path in sorted((pfs / "out").rglob("*")):
            target = output / path.relative_to(pfs / "out")
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            assert not target.exists(), f"{name}: two datums wrote {target.relative_to(output)}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    repos[name] = output
    commits[name] = uuid.uuid4().hex
    return output


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("model_spec", ["model", "model-secret-file"])
def test_the_whole_dag_runs_from_the_specs(model_spec, mnist_bin, tmp_path):
    # The input repos, as `make all` fills them (with the smoke config, to stay quick).
    repos = {}
    for repo, source in [("mnist", ROOT / "data/mnist-sample"), ("digits", ROOT / "data/digits")]:
        repos[repo] = tmp_path / "repos" / repo
        shutil.copytree(source, repos[repo])
    repos["training-config"] = tmp_path / "repos" / "training-config"
    repos["training-config"].mkdir(parents=True)
    shutil.copy(ROOT / "configs/smoke.toml", repos["training-config"] / "config.toml")
    commits = {repo: uuid.uuid4().hex for repo in repos}

    outputs = {}
    wandb = FakeWandb()
    try:
        for name in ORDER:
            spec = load_spec(model_spec if name == "model" else name)
            outputs[name] = run_pipeline(spec, repos, commits, mnist_bin, tmp_path, wandb.url)
            print(f"{name}: {tree(outputs[name])}")
    finally:
        wandb.stop()
    # Only training logs to W&B, with the key from the secret, and finishes its run.
    assert wandb.keys and set(wandb.keys) == {SECRET["key"]}
    assert wandb.exit_codes == [0]
    assert wandb.history_rows > 0

    assert tree(outputs["mnist-csv"]) == ["test.csv", "train.csv"]
    assert tree(outputs["model"]) == ["metrics.json", "model.bpk", "model.json"]
    # The checkpoints stayed in the worker's scratch space.
    scratch = tmp_path / "workers" / "model" / "0" / "tmp" / "checkpoints"
    assert sorted(os.listdir(scratch)) == ["epoch-0001", "epoch-0002"]
    card = json.loads((outputs["model"] / "model.json").read_text())
    provenance = card["provenance"]
    assert provenance["pipeline"] == "model"
    assert provenance["input_commits"] == {
        "mnist-csv": commits["mnist-csv"], "training-config": commits["training-config"]}
    assert card["backend"]["name"] == "cpu"
    assert tree(outputs["stats"]) == ["stats.json"]
    stats = json.loads((outputs["stats"] / "stats.json").read_text())
    assert stats["evaluation"]["examples"] == 1000
    assert tree(outputs["inference"]) == ["batch.csv", "digit-2.csv", "digit-9.csv"]
    assert len((outputs["inference"] / "batch.csv").read_text().splitlines()) == 16
    assert tree(outputs["image"]) == ["batch.gif", "digit-2.gif", "digit-9.gif"]
    for gif in outputs["image"].iterdir():
        assert gif.read_bytes()[:6] == b"GIF89a"
