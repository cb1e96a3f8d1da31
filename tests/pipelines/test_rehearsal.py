"""A local rehearsal of the whole DAG, run from the specs themselves: for each pipeline in
order, its transform.cmd runs once per datum in a /pfs-like tree (inputs by name, `out`), with
the environment Pachyderm would set, and its outputs become the repo the next stage reads.
A wrong flag or path in a spec fails here."""
import hashlib
import itertools
import json
import os
import shutil
import signal
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


def signature(datum, repos):
    """What identifies a datum to Pachyderm: its inputs' paths and contents."""
    digest = hashlib.sha256()
    for input_name, repo, entry in datum:
        root = repos[repo] if entry is None else repos[repo] / entry
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            digest.update(f"{input_name}:{path.relative_to(repos[repo])}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def run_pipeline(spec, repos, commits, mnist_bin, work, wandb_url, done=None):
    """Runs every datum of `spec` whose inputs are new; `done` (signature -> the datum's
    output directory) holds the datums processed by earlier jobs, whose outputs Pachyderm
    carries over without running them again. Returns the output repo and the datums run."""
    name = spec["pipeline"]["name"]
    output = work / "repos" / name
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    done = {} if done is None else done
    job = uuid.uuid4().hex
    ran = 0
    for index, datum in enumerate(datums(spec["input"], repos)):
        key = signature(datum, repos)
        if key in done:
            merge(name, done[key], output)
            continue
        ran += 1
        cmd, env, pfs = prepare_datum(spec, datum, index, job, repos, commits, mnist_bin, work,
                                      wandb_url)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{name} datum {index}: {cmd}\n{result.stderr}"
        assert SECRET["key"] not in result.stderr + result.stdout
        done[key] = pfs / "out"
        merge(name, pfs / "out", output)
    repos[name] = output
    commits[name] = uuid.uuid4().hex
    return output, ran


def prepare_datum(spec, datum, index, job, repos, commits, mnist_bin, work, wandb_url):
    """A worker's /pfs for datum `index` of `job`, and the command and environment Pachyderm
    would run it with. A retried datum is prepared again, the same job and index."""
    name = spec["pipeline"]["name"]
    pfs = work / "workers" / name / job / str(index) / "pfs"
    if pfs.exists():
        shutil.rmtree(pfs)
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
        # Pachyderm names each input's mount in a variable of the input's name.
        env[input_name] = str(pfs / input_name)
    # W&B goes to a fake server on loopback; the secret `wandb` reaches the stage as the
    # spec says: as an environment variable, or as files under mountPath (mapped here, as
    # /pfs is, through the binary's key-file setting).
    env["WANDB_BASE_URL"] = wandb_url
    env["HOME"] = str(work)
    for secret in spec["transform"].get("secrets", []):
        if "envVar" in secret:
            env[secret["envVar"]] = SECRET[secret["key"]]
        if "mountPath" in secret:
            mount = pfs.parent / secret["mountPath"].lstrip("/")
            mount.mkdir(parents=True)
            for key, value in SECRET.items():
                (mount / key).write_text(value)
            env["MNIST_WANDB_KEY_FILE"] = str(mount / "key")
    cmd = [str(mnist_bin) if arg == "mnist" else in_container(arg, pfs, volumes)
           for arg in spec["transform"]["cmd"]]
    return cmd, env, pfs


def merge(name, datum_out, output):
    """Outputs of all datums merge into the output commit; two datums writing one path is an
    error in Pachyderm too."""
    for path in sorted(datum_out.rglob("*")):
        target = output / path.relative_to(datum_out)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        assert not target.exists(), f"{name}: two datums wrote {target.relative_to(output)}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def input_repos(tmp_path):
    """The input repos as `make all` fills them, training-config empty."""
    repos = {}
    for repo, source in [("mnist", ROOT / "data/mnist-sample"), ("digits", ROOT / "data/digits")]:
        repos[repo] = tmp_path / "repos" / repo
        shutil.copytree(source, repos[repo])
    repos["training-config"] = tmp_path / "repos" / "training-config"
    repos["training-config"].mkdir(parents=True)
    return repos


def run_dag(model_spec, repos, commits, mnist_bin, tmp_path, wandb, done):
    """One pass of every pipeline in order; the outputs and the datums each ran."""
    outputs, ran = {}, {}
    for name in ORDER:
        spec = load_spec(model_spec if name == "model" else name)
        outputs[name], ran[name] = run_pipeline(
            spec, repos, commits, mnist_bin, tmp_path, wandb.url, done.setdefault(name, {}))
        print(f"{name}: {ran[name]} datums run: {tree(outputs[name])}")
    return outputs, ran


def check_downstream(outputs, selected):
    """stats and inference used the model `select` chose, and image drew inference's output."""
    select = outputs["select"]
    assert (select / "model" / "model.json").read_bytes() == (
        outputs["model"] / selected / "model.json").read_bytes()
    assert tree(outputs["stats"]) == ["confusion.png", "curves.png", "stats.json"]
    stats = json.loads((outputs["stats"] / "stats.json").read_text())
    assert stats["evaluation"]["examples"] == 1000
    assert stats["model"] == json.loads((select / "model" / "model.json").read_text())["summary"]
    assert tree(outputs["inference"]) == ["batch.csv", "digit-2.csv", "digit-9.csv"]
    assert len((outputs["inference"] / "batch.csv").read_text().splitlines()) == 16
    assert tree(outputs["image"]) == ["batch.gif", "digit-2.gif", "digit-9.gif"]
    for gif in outputs["image"].iterdir():
        assert gif.read_bytes()[:6] == b"GIF89a"


@pytest.mark.parametrize("model_spec", ["model", "model-secret-file"])
def test_the_whole_dag_runs_from_the_specs(model_spec, mnist_bin, tmp_path):
    # One config, as `make all` puts it (the smoke config, to stay quick).
    repos = input_repos(tmp_path)
    shutil.copy(ROOT / "configs/smoke.toml", repos["training-config"] / "smoke.toml")
    # The digits named, as a data set's classes.txt names its classes.
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    (repos["mnist"] / "classes.txt").write_text("".join(f"{name}\n" for name in names))
    commits = {repo: uuid.uuid4().hex for repo in repos}
    wandb = FakeWandb()
    try:
        outputs, _ = run_dag(model_spec, repos, commits, mnist_bin, tmp_path, wandb, {})
    finally:
        wandb.stop()
    # Training and its evaluation log to W&B, with the key from the secret, and finish.
    assert wandb.keys and set(wandb.keys) == {SECRET["key"]}
    assert wandb.exit_codes == [0, 0]
    assert [run["jobType"] for run in wandb.runs] == ["train", "eval"]
    assert wandb.history_rows > 0
    # Lineage: the data by its Pachyderm commit, used by training; the model made by training
    # with the commits it came from, used by the eval run.
    [data] = [a for a in wandb.artifacts if a["artifactTypeName"] == "dataset"]
    refs = {name: entry["ref"] for name, entry in data["manifest"]["contents"].items()}
    assert refs == {name: f"pfs://mnist-csv@{commits['mnist-csv']}/{name}"
                    for name in ("train.csv", "test.csv", "classes.txt")}
    [model] = [a for a in wandb.artifacts if a["artifactTypeName"] == "model"]
    assert json.loads(model["metadata"])["pachyderm"]["input_commits"]["mnist-csv"] == commits["mnist-csv"]
    train_run, eval_run = (run["name"] for run in wandb.runs)
    assert set(wandb.uses) == {(train_run, data["id"]), (eval_run, model["id"])}

    # The names go along with the data down the DAG, into the card and the evaluation.
    assert tree(outputs["mnist-csv"]) == ["classes.txt", "test.csv", "train.csv"]
    # The model repo holds the model only, in the directory named after its config.
    assert tree(outputs["model"]) == ["smoke/metrics.json", "smoke/model.bpk", "smoke/model.json"]
    # The checkpoints, on the node's cache volume while the datum ran, went when it succeeded.
    assert not (tmp_path / "node/var/cache/mnist/checkpoints/model").exists() or not any(
        (tmp_path / "node/var/cache/mnist/checkpoints/model").iterdir())
    card = json.loads((outputs["model"] / "smoke" / "model.json").read_text())
    provenance = card["provenance"]
    assert provenance["pipeline"] == "model"
    assert provenance["input_commits"] == {
        "mnist-csv": commits["mnist-csv"], "training-config": commits["training-config"]}
    assert card["backend"]["name"] == "cpu"
    assert card["class_names"] == names
    stats = json.loads((outputs["stats"] / "stats.json").read_text())
    assert [c["name"] for c in stats["evaluation"]["per_class"]] == names
    assert card["wandb_run"].endswith(f"/runs/{wandb.runs[0]['name']}")
    assert card["wandb_artifact"]["name"].endswith("/mnist-cnn:v0")
    assert tree(outputs["select"]) == [
        "leaderboard.json", "leaderboard.md", "model/metrics.json", "model/model.bpk",
        "model/model.json"]
    check_downstream(outputs, "smoke")


def test_a_sweep_trains_its_trials_as_datums_and_the_best_goes_downstream(mnist_bin, tmp_path):
    repos = input_repos(tmp_path)
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text((ROOT / "configs/sweeps/smoke-lr.toml").read_text().replace(
        'base = "../smoke.toml"', f'base = "{ROOT / "configs/smoke.toml"}"'))
    wandb = FakeWandb()
    try:
        # `make sweep-push`: the sweep is created in W&B, its configs go into training-config.
        env = {**os.environ, "WANDB_BASE_URL": wandb.url, "WANDB_API_KEY": SECRET["key"],
               "WANDB_PROJECT": "rehearsal", "HOME": str(tmp_path)}
        subprocess.run([str(mnist_bin), "sweep", "--sweep", str(sweep_file), "--output",
                        str(tmp_path / "sweep")], env=env, check=True, capture_output=True)
        configs = sorted((tmp_path / "sweep" / "configs").iterdir())
        assert len(configs) == 4
        for config in configs[:3]:
            shutil.copy(config, repos["training-config"])
        commits = {repo: uuid.uuid4().hex for repo in repos}
        done = {}
        outputs, ran = run_dag("model", repos, commits, mnist_bin, tmp_path, wandb, done)
        assert ran["model"] == 3
        names = [c.stem for c in configs]
        assert tree(outputs["model"]) == sorted(
            f"{n}/{f}" for n in names[:3] for f in ("metrics.json", "model.bpk", "model.json"))
        board = json.loads((outputs["select"] / "leaderboard.json").read_text())["entries"]
        assert sorted(e["name"] for e in board) == names[:3]
        assert [e["rank"] for e in board] == [1, 2, 3]
        accuracies = [e["validation_accuracy"] for e in board]
        assert accuracies == sorted(accuracies, reverse=True)
        assert set(board[0]["parameters"]) == {"optimizer.lr", "training.batch_size"}
        md = (outputs["select"] / "leaderboard.md").read_text()
        assert md.count("\n| ") == 4 and "`optimizer.lr`" in md and "[run](" in md
        check_downstream(outputs, board[0]["name"])

        # One sweep in W&B, each trial's run in it, its parameters at the top of its config.
        assert len(wandb.sweeps) == 1
        trainings = [run for run in wandb.runs if run["jobType"] == "train"]
        assert {run["sweep"] for run in trainings} == {"sweep1"}
        # The trial select chose (by validation accuracy) is the version W&B calls best.
        selected = json.loads((outputs["select"] / "model" / "model.json").read_text())
        [best] = [a for a in wandb.artifacts if "best" in a["live_aliases"]]
        assert selected["wandb_artifact"]["name"].endswith(f":v{best['version']}")
        for run in trainings:
            config = json.loads(run["config"])
            assert "optimizer.lr" in config and "training.batch_size" in config
            assert run["displayName"] in names

        # A fourth config: only it trains; the selection is made again over all four.
        shutil.copy(configs[3], repos["training-config"])
        commits["training-config"] = uuid.uuid4().hex
        outputs, ran = run_dag("model", repos, commits, mnist_bin, tmp_path, wandb, done)
        assert ran["model"] == 1
        assert len([run for run in wandb.runs if run["jobType"] == "train"]) == 4
        board = json.loads((outputs["select"] / "leaderboard.json").read_text())["entries"]
        assert sorted(e["name"] for e in board) == names
        check_downstream(outputs, board[0]["name"])
    finally:
        wandb.stop()


def test_a_killed_datum_is_retried_from_its_checkpoint_in_the_same_wandb_run(mnist_bin, tmp_path):
    """A worker killed mid-training (a node lost, memory exceeded): Pachyderm retries the datum
    (datumTries) with the same job and datum, and it goes on from the checkpoint it left on the
    node's cache volume, in the same W&B run; once it succeeds, the checkpoints go."""
    spec = load_spec("model")
    assert spec["datumTries"] > 1
    repos = input_repos(tmp_path)
    config = (ROOT / "configs/smoke.toml").read_text().replace("epochs = 2", "epochs = 30")
    (repos["training-config"] / "long.toml").write_text(config)
    commits = {repo: uuid.uuid4().hex for repo in repos}
    wandb = FakeWandb()
    try:
        run_pipeline(load_spec("mnist-csv"), repos, commits, mnist_bin, tmp_path, wandb.url)
        [datum] = datums(spec["input"], repos)
        job = uuid.uuid4().hex
        args = (spec, datum, 0, job, repos, commits, mnist_bin, tmp_path, wandb.url)
        cmd, env, _ = prepare_datum(*args)
        first = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        for line in first.stderr:
            # Epoch 2's checkpoint is written before epoch 3 starts.
            if line.startswith("epoch 3 step"):
                first.kill()
                break
        first.wait()
        assert first.returncode == -signal.SIGKILL
        checkpoints = tmp_path / "node/var/cache/mnist/checkpoints/model" / f"{0:064x}"
        assert any(p.name.startswith("step-") for p in checkpoints.iterdir())

        cmd, env, pfs = prepare_datum(*args)
        retry = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert retry.returncode == 0, retry.stderr
        assert "resuming after epoch 2" in retry.stderr
        card = json.loads((pfs / "out" / "long" / "model.json").read_text())
        assert card["training"]["epochs"] == 30 and card["training"]["resumed_from_epoch"] == 2
        assert not checkpoints.exists()
        # One W&B run for the datum, created by both tries, finished once.
        assert len({run["name"] for run in wandb.runs}) == 1 and len(wandb.runs) >= 2
        assert wandb.exit_codes == [0]
    finally:
        wandb.stop()


def test_a_datum_retried_on_another_node_resumes_from_its_wandb_checkpoint(mnist_bin, tmp_path):
    """A node lost mid-training: Pachyderm retries the datum elsewhere, where the node's cache
    volume holds no checkpoint. The retry fetches the run's latest `checkpoint` artifact from
    W&B and goes on from it, in the same W&B run."""
    spec = load_spec("model")
    repos = input_repos(tmp_path)
    config = (ROOT / "configs/smoke.toml").read_text().replace("epochs = 2", "epochs = 30")
    (repos["training-config"] / "long.toml").write_text(config)
    commits = {repo: uuid.uuid4().hex for repo in repos}
    wandb = FakeWandb()
    try:
        run_pipeline(load_spec("mnist-csv"), repos, commits, mnist_bin, tmp_path, wandb.url)
        [datum] = datums(spec["input"], repos)
        args = (spec, datum, 0, uuid.uuid4().hex, repos, commits, mnist_bin, tmp_path, wandb.url)
        cmd, env, _ = prepare_datum(*args)
        first = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        logged = None
        for line in first.stderr:
            if line.startswith("wandb: checkpoint "):
                logged = line.split()[2]
                first.kill()
                break
        first.wait()
        assert first.returncode == -signal.SIGKILL and logged, "no checkpoint reached W&B"
        # Another node: its cache volume is empty.
        shutil.rmtree(tmp_path / "node")

        cmd, env, pfs = prepare_datum(*args)
        retry = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert retry.returncode == 0, retry.stderr
        assert f"fetched checkpoint {logged} from W&B" in retry.stderr, retry.stderr
        card = json.loads((pfs / "out" / "long" / "model.json").read_text())
        assert card["training"]["epochs"] == 30 and card["training"]["resumed_from_epoch"] >= 1
        assert len({run["name"] for run in wandb.runs}) == 1 and len(wandb.runs) >= 2
        assert wandb.exit_codes == [0]
    finally:
        wandb.stop()
