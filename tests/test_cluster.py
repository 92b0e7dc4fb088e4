"""The same scores on a Ray cluster: a local cluster on 127.0.0.1 (2 CPUs) runs the data and
diffusion paths, which must equal the local run's, survives a worker killed mid-task, and fails
with a message naming the fix (and no report) where a worker cannot do its part."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from object_store import (  # its credentials and cache: in the environment the workers inherit
    copy_subjects,
    local_s3,
    upload,
)

from engine.cards import ModelRef
from engine.cli.main import main
from engine.compute.cluster import LOCAL_ONLY_ENV, Cluster
from engine.data.defaults import open_dataset
from engine.errors import EveInputError
from engine.models import load
from engine.scores import service

os.environ.setdefault(LOCAL_ONLY_ENV, "0")  # before Ray is imported: the test cluster listens on 127.0.0.1 only
import ray  # noqa: E402  (after the switch it reads)

MODEL = ModelRef.builtin("synthbrain-diagnosis")


@pytest.fixture(scope="module")
def cluster():
    with Cluster.connect(num_cpus=2) as connected:
        yield connected


def _local(split: str = "test", n_boot: int = 50) -> service.ScoreReport:
    model, card = load(MODEL, "cpu")
    return service.data_scores(model, card, open_dataset("synthbrain"), split=split, n_boot=n_boot)


def test_the_cluster_is_local_and_bound_to_localhost(cluster):
    assert cluster.workers == 2
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}


def test_data_scores_on_the_cluster_equal_the_local_run_bit_for_bit(cluster):
    local = _local()
    shards = []
    model, card = load(MODEL, "cpu")
    remote = service.data_scores(  # the service, its outputs from the cluster's runner
        model,
        card,
        open_dataset("synthbrain"),
        split="test",
        n_boot=50,
        batch_size=16,
        progress=lambda done, total: shards.append((done, total)),
        runner=cluster.outputs_runner(MODEL),
        where=cluster.describe(),
    )
    np.testing.assert_array_equal(remote.outputs, local.outputs)  # each image went through the model once, alike
    assert remote.table.equals(local.table)  # the estimator ran on the driver, seeded alike
    assert (
        shards == [(1, 4), (2, 4), (3, 4), (4, 4)] and "Ray" in remote.metadata["cluster"]
    )  # 120 rows, 2 x 16 a shard


def test_diffusion_scores_on_the_cluster_equal_the_local_run(cluster):
    from engine.diffusion import load_diffusion

    model, card = load(ModelRef.builtin("shapes-elongated"), "cpu")
    dataset = open_dataset("shapes")
    settings = dict(k_values=3, n_per_value=4, n_boot=20, seed=3)
    local = service.diffusion_scores(
        model, card, dataset, ["size", "aspect"], diffusion=load_diffusion("shapes"), **settings
    )
    values_done = []

    def progress(done, total):
        values_done.append((done, total))

    remote = service.diffusion_scores(
        model,
        card,
        dataset,
        ["size", "aspect"],
        diffusion=load_diffusion("shapes"),
        runner=cluster.diffusion_runner(ModelRef.builtin("shapes-elongated"), "shapes", "cpu", progress),
        **settings,
    )
    assert values_done[-1] == (6, 6)  # one task per (feature, value): 2 features x K = 3
    assert remote.table.equals(local.table)
    for key, table in local.value_tables.items():
        assert remote.value_tables[key].equals(table)


def _kill_first_worker_running(task: str, killed: list, stop: threading.Event) -> None:
    """SIGKILL the first process whose title says it is running `task` (Ray names a busy worker `ray::<task>`)."""
    while not stop.is_set() and not killed:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError:
                continue
            if title.startswith(f"ray::{task}"):
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.005)


def test_a_worker_killed_mid_task_is_retried_and_the_result_is_unchanged(cluster):
    rows = service.split_rows(open_dataset("synthbrain"), "all")
    expected = _local(split="all", n_boot=0).outputs
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_worker_running, args=("_outputs_task", killed, stop))
    killer.start()
    try:
        outputs = cluster.model_outputs(MODEL, "synthbrain", rows, batch_size=4)  # 25 shards of 4 batches of 4
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was caught mid-task to kill"
    np.testing.assert_array_equal(outputs, expected)


def test_a_worker_that_cannot_read_the_model_stops_the_run_naming_the_fix(cluster, tmp_path):
    spec = load(MODEL, "cpu")[1].spec
    missing = ModelRef.torchscript(tmp_path / "only-on-the-driver.pt", spec)
    with pytest.raises(EveInputError, match="does not exist.*file system all nodes share"):
        cluster.model_outputs(missing, "synthbrain", np.arange(8))


def test_the_cli_on_the_cluster_writes_the_local_report_and_an_unreachable_one_writes_nothing(cluster, tmp_path):
    argv = ["score", "--data", "synthbrain", "--model", MODEL.name, "--n-boot", "20", "--features", "age,icv"]
    assert main([*argv, "--out", str(tmp_path / "local.json")]) == 0
    assert main([*argv, "--out", str(tmp_path / "ray.json"), "--ray"]) == 0
    local, remote = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("local", "ray"))
    assert remote["scores"] == local["scores"] and "Ray" in remote["cluster"]
    start = time.perf_counter()
    assert main([*argv, "--out", str(tmp_path / "unreachable.json"), "--ray", "127.0.0.1:1"]) == 2
    assert time.perf_counter() - start < 60  # refused at once, not after Ray's minutes of retries
    assert not (tmp_path / "unreachable.json").exists() and not (tmp_path / "unreachable.csv").exists()


def test_shards_are_whole_batches_and_give_every_worker_two():
    from engine.compute.cluster import SHARD_BATCHES, shard_batches

    assert shard_batches(120, 64, 2) == 1 and shard_batches(120, 16, 2) == 2  # 2 shards a worker
    assert shard_batches(40_000, 64, 160) == 2 and shard_batches(40_000, 64, 2) == SHARD_BATCHES
    assert shard_batches(3, 64, 2) == 1


def test_an_address_that_is_not_host_port_is_refused():
    with pytest.raises(EveInputError, match="not host:port"):
        Cluster.connect("my-cluster")


def test_on_a_cold_folder_each_worker_reads_only_its_shard_and_gets_the_local_inputs(cluster, tmp_path):
    copy_subjects(Path(open_dataset("synthbrain").root), tmp_path, 24)
    outputs = cluster.model_outputs(MODEL, str(tmp_path), np.arange(24), batch_size=4)  # 3 shards of 2 batches of 4
    assert not list(tmp_path.glob(".eve_cache/*.npy"))  # nobody read the whole cohort to serve a shard
    model, card = load(MODEL, "cpu")
    np.testing.assert_array_equal(outputs, service.model_outputs(model, open_dataset(tmp_path), card.spec))


def test_a_cohort_on_an_object_store_is_read_by_the_workers_and_scores_as_locally(cluster, tmp_path):
    copy_subjects(Path(open_dataset("synthbrain").root), tmp_path, 24)
    with local_s3() as endpoint:
        dataset = open_dataset(upload(endpoint, tmp_path, "ray-cohort"))
        assert not list(dataset.root.rglob("*.nii.gz"))  # the driver read headers only
        model, card = load(MODEL, "cpu")
        remote = service.data_scores(
            model, card, dataset, split="all", n_boot=20, batch_size=4, runner=cluster.outputs_runner(MODEL)
        )
    assert len(list(dataset.root.rglob("*.nii.gz"))) == 24  # the workers fetched their shards' files
    local = service.data_scores(model, card, open_dataset(tmp_path), split="all", n_boot=20)
    np.testing.assert_array_equal(remote.outputs, local.outputs)
    assert remote.table.equals(local.table) and remote.metadata["dataset"]["path"] == "s3://cohorts/ray-cohort"


@pytest.fixture
def head_elsewhere(tmp_path):
    """A cluster started the way an operator starts one (`ray start --head`), in a folder without Eve
    and with no PYTHONPATH to it, with token authentication: its workers can import Eve only from
    what the driver ships. The driver's environment to reach it is yielded with its address."""
    import secrets
    import socket
    import subprocess
    import sys
    import tempfile

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {LOCAL_ONLY_ENV: "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    ray_cli = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=1", f"--temp-dir={temp}"]
        + ["--include-dashboard=false", "--disable-usage-stats"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        yield f"127.0.0.1:{port}", env
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: the head stops its processes when it is told to
        head.wait(timeout=60)


def test_a_cluster_without_eve_runs_the_cli_from_the_code_the_driver_ships(head_elsewhere, tmp_path):
    import subprocess
    import sys

    address, env = head_elsewhere
    root = Path(__file__).resolve().parents[1]
    argv = ["score", "--data", "synthbrain", "--model", MODEL.name, "--n-boot", "20", "--features", "age,icv"]
    run = subprocess.run(
        [sys.executable, "-m", "engine", *argv, "--ray", address, "--out", str(tmp_path / "ray.json")],
        cwd=tmp_path,  # the driver too runs elsewhere: relative paths would not mean the same on the workers
        env={**env, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert main([*argv, "--out", str(tmp_path / "local.json")]) == 0
    remote, local = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("ray", "local"))
    assert remote["scores"] == local["scores"] and remote["cluster"] == f"Ray {ray.__version__} at {address}, 1 CPUs"


def test_the_app_started_with_eve_ray_computes_on_the_cluster_and_shows_the_local_numbers(cluster, monkeypatch):
    import streamlit as st
    from test_app import _diffusion_scores_app, _figures

    from components import loaders

    def bars(at) -> list:
        return [
            (t.get("name"), t.get("y"), t.get("x")) for f in _figures(at) for t in f["data"] if t.get("type") == "bar"
        ]

    st.cache_data.clear()
    local = bars(_diffusion_scores_app("shapes", ("size", "texture")))
    ran = []
    for method in ("model_outputs",):
        original = getattr(Cluster, method)
        monkeypatch.setattr(
            Cluster, method, lambda self, *a, _m=method, _f=original, **k: ran.append(_m) or _f(self, *a, **k)
        )
    monkeypatch.setenv(loaders.RAY_ENV, "local")
    st.cache_data.clear()
    at = _diffusion_scores_app("shapes", ("size", "texture"))
    assert any("run on Ray" in c.value for c in at.sidebar.caption)
    # the data path's outputs on the cluster; the generator path's twins and generated subjects are drawn here
    assert "model_outputs" in ran
    assert bars(at) == local and local


def test_the_app_with_an_unreachable_cluster_says_so_and_computes_here(monkeypatch):
    from test_app import _app, _figures, _no_exception

    from components import loaders

    monkeypatch.setenv(loaders.RAY_ENV, "127.0.0.1:1")
    at = _app("shapes")
    at.switch_page("app_pages/scores.py").run()
    _no_exception(at)
    [warning] = [w.value for w in at.sidebar.warning]
    assert warning.startswith("EVE_RAY=127.0.0.1:1: No Ray cluster answers") and "computes on this machine" in warning
    assert any(f["data"] for f in _figures(at))  # the scores were computed here


def test_a_worker_out_of_memory_is_told_to_use_smaller_batches_or_bigger_nodes():
    from engine.compute.cluster import _worker_failure

    killed = ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory.")
    assert "ran out of memory computing the outputs: give a smaller --batch-size" in str(
        _worker_failure(killed, "the outputs")
    )
    raised = ray.exceptions.RayTaskError("_outputs_task", "Traceback ...", MemoryError("cannot allocate"))
    assert "ran out of memory" in str(_worker_failure(raised, "the outputs"))


def test_a_worker_that_cannot_see_the_data_stops_the_run_naming_the_fix(cluster, tmp_path):
    copy_subjects(Path(open_dataset("synthbrain").root), tmp_path, 8)
    dataset = open_dataset(tmp_path)  # the driver saw every file
    (tmp_path / dataset.table["file"].iloc[5]).unlink()  # a node that does not
    with pytest.raises(EveInputError, match="Row 7: .* does not exist on this machine.*file system all nodes share"):
        cluster.model_outputs(MODEL, dataset, np.arange(8), batch_size=4)
