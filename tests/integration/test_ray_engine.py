"""``medmoe detect --engine ray`` (:mod:`medmoe.api.ray_batch`): the same rows as the single-process detect,
resumable after an interruption, every image once after a model replica is killed mid-run, and spread over a
real two-node Ray cluster started here (loopback only)."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydicom.data import get_testdata_file

from medmoe.api.batch import DetectOptions, detect_files
from medmoe.api.detector import Detector
from medmoe.api.inputs import InputFile, collect_inputs
from medmoe.api.ray_batch import PARQUET_NAME, RaySettings, score_on_ray
from medmoe.api.results_csv import COLUMNS
from medmoe.cli import main
from medmoe.data.synthetic import write_synthetic_dataset
from medmoe.errors import ConfigError
from medmoe.io.choice import parse_choice

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[InputFile]:
    """Brain phantoms, the 10 frames of a real head MR and an unreadable file: 23 images."""
    root = tmp_path_factory.mktemp("ray-inputs")
    write_synthetic_dataset(root, n_train=1, n_test_normal=6, n_test_abnormal=6, size=64, seed=0,
                            tasks=("brain_mri",))
    shutil.copy(get_testdata_file("emri_small.dcm", download=False), root / "emri_small.dcm")
    (root / "broken.png").write_bytes(b"not a png")
    found = collect_inputs([root / "brain_mri" / "test", root / "emri_small.dcm", root / "broken.png"],
                           frame=parse_choice("all"))
    assert len(found.items) == 23
    return found.items


@pytest.fixture(scope="module")
def model(feature_run: Path) -> tuple[Detector, Path]:
    return Detector.load(feature_run, threads=1), feature_run


OPTIONS = DetectOptions(task="brain_mri", batch_size=4)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module's single-machine tests (score_on_ray joins a Ray already started)."""
    import ray

    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=False)
    yield
    ray.shutdown()


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def _numbers(cell: str) -> list[float]:
    """The numbers of a numeric cell (a list for ``expert_weights``); ``[]`` for text."""
    try:
        return [float(v) for v in cell.split()]
    except ValueError:
        return []


def test_ray_writes_the_rows_and_files_of_the_single_process_detect(local_ray: None, model: tuple[Detector, Path],
                                                                    images: list[InputFile], tmp_path: Path) -> None:
    detector, path = model
    (tmp_path / "local").mkdir()
    (tmp_path / "ray").mkdir()
    detect_files(detector, images, tmp_path / "local", OPTIONS)
    on_ray = score_on_ray(detector, path, images, tmp_path / "ray", OPTIONS, RaySettings(actors=2))
    assert on_ray.interrupted is None and len(on_ray.nodes) == 1
    ours, theirs = _rows(tmp_path / "ray"), _rows(tmp_path / "local")
    assert [r["source"] + r["frame"] for r in ours] == [r["source"] + r["frame"] for r in theirs]  # input order
    for a, b in zip(ours, theirs, strict=True):
        if b["error"]:
            assert a["error"] == b["error"] and a["score"] == ""
            continue
        for column, cell in a.items():  # numbers within 1e-5 (batches differ: float round-off), text equal
            numbers = _numbers(cell)
            assert numbers == pytest.approx(_numbers(b[column]), rel=1e-5) if numbers else cell == b[column], column
        assert (tmp_path / "ray" / a["overlay"]).is_file()
    assert pq.read_table(tmp_path / "ray" / PARQUET_NAME).to_pylist() == ours
    assert not (tmp_path / "ray" / "parts").exists()


def test_an_interrupted_run_resumes_with_every_image_once(local_ray: None, model: tuple[Detector, Path], images: list[InputFile],
                                                         tmp_path: Path) -> None:
    detector, path = model
    seen: list[int] = []

    def stop_after_first_batch(n: int) -> None:
        seen.append(n)
        raise KeyboardInterrupt

    first = score_on_ray(detector, path, images, tmp_path, OPTIONS, progress=stop_after_first_batch)
    assert first.interrupted == signal.SIGINT and 0 < len(first.rows) < len(images)
    scored_before = {(r["source"], r["frame"]) for r in _rows(tmp_path)}
    counted: list[int] = []
    second = score_on_ray(detector, path, images, tmp_path, DetectOptions(task="brain_mri", batch_size=4,
                                                                        resume=True), progress=counted.append)
    assert second.interrupted is None and second.resumed == len(first.rows) - len(first.failed)
    rows = _rows(tmp_path)
    keys = [(r["source"], r["frame"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(images) and sum(counted) == len(images)
    assert scored_before <= set(keys)


def _kill_a_replica_mid_run(killed: list[int]) -> threading.Thread:
    """A thread that kills the first model replica to come up (its process, SIGKILL), once it has loaded the
    model and taken batches. The pid comes from Ray's actor table (the public state API needs the dashboard)."""
    import ray

    def watch() -> None:
        deadline = time.monotonic() + 600
        while not killed and time.monotonic() < deadline:
            if ray.is_initialized():
                alive = [a for a in ray._private.state.actors().values()
                         if "_Scorer" in a["ActorClassName"] and a["State"] == "ALIVE"]
                if alive:
                    os.kill(alive[0]["Pid"], signal.SIGKILL)
                    killed.append(alive[0]["Pid"])
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_killed_model_replica_loses_and_duplicates_nothing(local_ray: None, model: tuple[Detector, Path], images: list[InputFile],
                                                             tmp_path: Path) -> None:

    detector, path = model
    killed: list[int] = []
    watcher = _kill_a_replica_mid_run(killed)
    run = score_on_ray(detector, path, images, tmp_path, DetectOptions(task="brain_mri", batch_size=2),
                       RaySettings(actors=1))
    watcher.join(timeout=1)
    assert run.interrupted is None and len(killed) == 1
    keys = [(r["source"], r["frame"]) for r in _rows(tmp_path)]
    assert len(keys) == len(set(keys)) == len(images)
    assert sum(1 for r in _rows(tmp_path) if r["error"]) == 1  # the broken file, nothing else


def test_without_ray_the_engine_says_how_to_install_it(model: tuple[Detector, Path], images: list[InputFile],
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as when it is not installed
    with pytest.raises(ConfigError, match=r"needs Ray: pip install 'medmoe\[ray\]'"):
        score_on_ray(*model, images, tmp_path, OPTIONS)
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.fixture
def two_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A head and a worker node (``ray start``, one CPU each, loopback), stopped afterwards."""
    import ray
    from ray._raylet import Config

    ray.shutdown()  # the module's local Ray, if it ran: this test joins the cluster instead
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # this process joins with the token too (as a user sets it)
    Config.initialize("")  # Ray reads its settings once per process: read them again
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # token authentication on every node (Ray's default where a token exists, which a local ray.init makes);
    # a node whose mode is left unset would not join a head that has it
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "token"}
    subprocess.run([RAY, "get-auth-token", "--generate"], check=True, env=env, capture_output=True)
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--include-dashboard", "false", *common], check=True, env=env, capture_output=True)
        subprocess.run([RAY, "start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1",
                        *common], check=True, env=env, capture_output=True)
        _wait_for_cpus(f"127.0.0.1:{port}", 2)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)


def _wait_for_cpus(address: str, cpus: int) -> None:
    """Until the cluster at ``address`` offers ``cpus`` CPUs: ``ray start`` of a worker node can return before
    the head counts its resources (on a loaded machine a run started at once then sees one node)."""
    import ray

    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             configure_logging=False)
    try:
        deadline = time.monotonic() + 120
        while ray.cluster_resources().get("CPU", 0) < cpus:
            assert time.monotonic() < deadline, f"the cluster has {ray.cluster_resources()} after 120 s"
            time.sleep(0.2)
    finally:
        ray.shutdown()


def test_detect_engine_ray_spreads_a_run_over_a_two_node_cluster(
        two_nodes: str, feature_run: Path, images: list[InputFile], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    sources = sorted({str(item.plane.path) for item in images})
    monkeypatch.setattr(sys, "argv", ["medmoe", "detect", *sources, "--frame", "all", "--task", "brain_mri",
                                      "--model", str(feature_run), "--out", str(tmp_path), "--engine", "ray",
                                      "--address", two_nodes, "--actors", "2", "--batch-size", "2", "--no-progress"])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_code:  # exit status 1: the broken file could not be scored
        main()
    output = " ".join(capsys.readouterr().out.split())
    # which replica takes a batch is Ray Data's choice (the least busy, preferring the node that read it): when
    # decoding is slower than scoring, one replica keeps up alone, so the run may say one node; it says which
    reported = re.search(r"scored on ([12]) Ray node\(s\)", output)
    assert exit_code.value.code == 1 and reported, output
    assert len(_replica_nodes(two_nodes)) == 2  # one model replica on each node
    keys = [(r["source"], r["frame"]) for r in _rows(tmp_path)]
    assert len(keys) == len(set(keys)) == len(images)
    assert (tmp_path / PARQUET_NAME).is_file()


def _replica_nodes(address: str) -> set[str]:
    """The nodes that hosted the model replicas of the cluster's runs (Ray's actor table keeps finished actors)."""
    import ray

    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             configure_logging=False)
    try:
        return {a["Address"]["NodeID"] for a in ray._private.state.actors().values() if "_Scorer" in a["ActorClassName"]}
    finally:
        ray.shutdown()
