"""The benchmark harness: planning, a tiny end-to-end run on synthetic phantoms, resume, results, tables."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path

import pytest

import medmoe.benchmark.runner as runner
from engine_fixtures import FAST, synthetic
from medmoe.benchmark import BenchmarkContext, Profile, RunSpec, Subsample, plan_runs, run_benchmark
from medmoe.benchmark.claim import CLAIM_FILE
from medmoe.benchmark.plan import METHOD_BY_NAME, METHODS, select_methods
from medmoe.benchmark.results import MEAN
from medmoe.benchmark.runner import equal_step_epochs, subsample
from medmoe.benchmark.tables import cell, render_table
from medmoe.data.manifest import Manifest, Sample
from medmoe.engine.config import load_config
from medmoe.errors import CheckpointError, ConfigError

TASKS = ("brain_mri", "head_ct")
METHOD_NAMES = ("ours", "universal_ae", "ae", "no_prompt", "ae_steps")


def test_plan_runs_table1_every_seed_ablations_first_seed_only() -> None:
    tasks = ("a", "b", "c", "d", "e")
    paper = select_methods(None)  # the paper profiles' tables
    assert {m.table for m in paper} == {"table1", "table2", "table3", "table4"}
    runs = plan_runs(paper, [0, 1, 2], tasks)
    by_method = {m.name: [r for r in runs if r.method == m.name] for m in paper}
    assert len(by_method["ours"]) == len(by_method["universal_ae"]) == 3
    assert len(by_method["ae"]) == len(by_method["ae_u"]) == len(by_method["memae"]) == 15
    for name in ("no_hq", "no_prompt", "router_norm", "k1", "k2", "k3", "k4"):
        assert [(r.seed, r.task) for r in by_method[name]] == [(0, "all")]
    for name in ("ae_steps", "ae_u_steps"):
        assert [(r.seed, r.task) for r in by_method[name]] == [(0, t) for t in tasks]
    assert len(runs) == 3 * (2 + 15) + 7 + 10 == len({r.key for r in runs})
    assert {r.method for r in runs[-10:]} == {"ae_steps", "ae_u_steps"}  # the budget control comes last
    table1 = [r for r in runs if METHOD_BY_NAME[r.method].table == "table1"]
    assert runs[:len(table1)] == table1  # Table 1 first, seed by seed
    assert [r.seed for r in table1] == sorted(r.seed for r in table1)
    assert RunSpec("ae", 1, "b").overrides()[-2:] == ("train.seed=1", "train.tasks=[b]")


def test_feature_profile_plans_its_own_tables() -> None:
    from medmoe.benchmark.plan import FEATURE_TABLES, PROFILES

    methods = select_methods(None, PROFILES["cpu-feat"].tables)
    assert {m.table for m in methods} == set(FEATURE_TABLES)
    runs = plan_runs(methods, [0, 1, 2], ("a", "b"))
    by_method = {m.name: [r.seed for r in runs if r.method == m.name] for m in methods}
    for name in ("feature_moe", "feature_moe_euclidean", "patchcore", "patchcore_euclidean", "patchcore_universal",
                 "patch_knn", "feature_nn", "pixel_ours"):
        assert by_method[name] == [0, 1, 2]  # universal runs, every seed
    for name in ("feat_no_hq", "feat_no_prompt", "feat_k1", "feat_n8"):
        assert by_method[name] == [0]


def test_plan_and_method_errors() -> None:
    with pytest.raises(ConfigError, match="distinct"):
        plan_runs(METHODS, [0, 0], ("a",))
    with pytest.raises(ConfigError, match="unknown method"):
        select_methods(["ours", "vae"])
    assert [m.name for m in select_methods(["ae", "ours"])] == ["ours", "ae"]


def test_subsample_keeps_limits_and_prefers_unflagged_rows(tmp_path: Path) -> None:
    manifest = synthetic(tmp_path, n_train=20, n_test=6, tasks=TASKS)
    flagged = [s.with_flag("other_source") if s.split == "test" and s.label == 1 and i % 2 else s
               for i, s in enumerate(manifest.samples)]
    manifest.samples[:] = flagged
    small = subsample(manifest, Subsample(train=5, val=1, test_per_class=3), seed=0)
    for task in TASKS:
        assert len(small.select(split="train", task=task)) == 5
        assert len(small.select(split="val", task=task)) == 1
        abnormal = [s for s in small.select(split="test", task=task) if s.label == 1]
        assert len(abnormal) == 3 and not any(s.flags for s in abnormal)
    assert subsample(manifest, Subsample(5, 1, 3), seed=0).samples == small.samples


def _context(data: Path, out: Path, *extra: str) -> BenchmarkContext:
    profile = Profile("tiny", None, (*FAST, "train.epochs=1", "train.batch_size=8", f"data.cache_dir={out / 'cache'}",
                                     *extra))
    return BenchmarkContext(profile=profile, config_dir=data, data=(str(data),), out=out,
                            provenance={"commit": "test", "machine": "test"})


HEADER = {"command": "python benchmarks/run.py --profile tiny", "invocation": "pytest", "commit": "test",
          "machine": "test"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    data = tmp_path_factory.mktemp("phantoms")
    synthetic(data, n_train=10, n_test=3, tasks=TASKS)
    out = tmp_path_factory.mktemp("bench")
    results = run_benchmark(_context(data, out), select_methods(METHOD_NAMES), [0, 1], HEADER)
    return data, out, results


def test_results_cover_every_planned_run(bench) -> None:
    _, out, results = bench
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["tasks"] == list(TASKS) and on_disk["seeds"] == [0, 1]
    assert on_disk["progress"] == {"runs_done": 2 + 2 + 4 + 1 + 2, "runs_expected": 11, "complete": True}
    ae = on_disk["methods"]["ae"]
    assert ae["single_task"] and ae["runs_done"] == ae["runs_expected"] == 4
    assert set(ae["per_seed"]) == {"0", "1"}
    assert set(ae["per_seed"]["0"]["runs"]) == set(TASKS)
    brain = ae["per_seed"]["0"]["tasks"]["brain_mri"]
    assert {"auroc", "ap", "f1_best", "acc_best", "f1_val", "dedup", "excluded"} <= set(brain)
    assert ae["summary"]["brain_mri"]["auroc"]["n"] == 2
    assert on_disk["methods"]["no_prompt"]["seeds"] == [0]
    assert "routing_accuracy" in on_disk["methods"]["ours"]["per_seed"]["1"]["tasks"]["head_ct"]
    assert not list((out / "runs").rglob("last.pt"))  # resume states of finished runs are removed
    run = on_disk["methods"]["ours"]["per_seed"]["0"]["runs"]["all"]
    assert run["epochs"] == 1 and run["commit"] == "test" and run["finished"]
    figures = {p.name for p in (out / "figures").iterdir()}
    assert figures == {"fig5_histograms_ours.png", "fig6_expert_heatmap.png", "fig9_tsne_prompts.png"}


def test_tables_are_generated_from_results_json(bench) -> None:
    _, out, _ = bench
    results = json.loads((out / "results.json").read_text())
    table1 = (out / "table1.md").read_text()
    assert table1 == render_table(results, "table1")
    assert "**partial: 8 of 16 runs finished**" in table1  # AE-U and MemAE were not run
    assert "**epochs: 1**" in table1 and "seeds 0, 1, mean ± std over seeds" in table1
    ae_rows = [line for line in table1.splitlines() if line.startswith("| AE, single-task")]
    for row, task in ((ae_rows[0], "brain_mri"), (ae_rows[1], MEAN)):  # first and second half
        key = "mean" if task == MEAN else None
        values = {int(s): (e[key] if key else e["tasks"][task])["auroc"]
                  for s, e in results["methods"]["ae"]["per_seed"].items()}
        assert row.split("|")[2].strip() == cell(values, 2)
    assert "- Command: `python benchmarks/run.py --profile tiny`" in table1
    assert "- Runs trained at commit test on test." in table1
    assert "*paper: AE*" in table1 and "*80.88*" in table1
    assert "Δ AUC universal AE − AE single-task |" in table1 and "Δ AUC ours − AE-U single-task |" in table1
    table2 = (out / "table2.md").read_text()
    assert "one seed (0), as in the paper" in table2 and "partial: 2 of 4 runs" in table2
    assert re.search(r"\| ✗HQ ✓TP \(no hallucination map\) +\| +n/a", table2)
    assert "partial: 1 of 5 runs" in (out / "table3.md").read_text()


def test_cell_marks_missing_seeds() -> None:
    assert cell({0: 0.5, 1: 0.7}, 2) == "60.00 ± 14.14"
    assert cell({0: 0.5}, 3) == "50.00 (n=1)"
    assert cell({}, 1) == "n/a"


def test_resume_skips_finished_runs_and_continues_unfinished_ones(bench, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    data, out, results = bench
    copy = tmp_path / "bench"
    shutil.copytree(out, copy)
    calls: list[tuple[str, bool]] = []
    monkeypatch.setattr(runner, "train", lambda config, manifests, run_dir, resume, progress:
                        calls.append((str(Path(run_dir).relative_to(copy / "runs")), resume)))
    context = _context(data, copy)
    (copy / "runs" / "ae/seed1/head_ct" / runner.DONE_FILE).unlink()  # trained, not evaluated
    again = run_benchmark(context, select_methods(METHOD_NAMES), [0, 1], HEADER)
    assert calls == []  # nothing retrained
    assert again["methods"]["ae"]["per_seed"]["1"]["tasks"]["head_ct"]["auroc"] == pytest.approx(
        results["methods"]["ae"]["per_seed"]["1"]["tasks"]["head_ct"]["auroc"], abs=1e-6)
    unfinished = copy / "runs" / "universal_ae/seed0/all"
    (unfinished / runner.DONE_FILE).unlink()
    (unfinished / "model.json").unlink()
    (unfinished / "checkpoints").mkdir(exist_ok=True)
    (unfinished / "checkpoints" / "last.pt").write_bytes(b"state")
    with pytest.raises(CheckpointError):  # the stub trains nothing, so there is no checkpoint to evaluate
        run_benchmark(context, select_methods(METHOD_NAMES), [0, 1], HEADER)
    assert calls == [("universal_ae/seed0/all", True)]


def test_changed_settings_are_refused(bench, tmp_path: Path) -> None:
    data, out, _ = bench
    copy = tmp_path / "bench"
    shutil.copytree(out, copy)
    with pytest.raises(ConfigError, match="another configuration"):
        run_benchmark(_context(data, copy, "train.lr=0.1"), select_methods(["ae"]), [0, 1], HEADER)


def test_a_subset_run_keeps_the_other_methods_results(bench, tmp_path: Path) -> None:
    data, out, results = bench
    copy = tmp_path / "bench"
    shutil.copytree(out, copy)
    again = run_benchmark(_context(data, copy), select_methods(["ae"]), [0, 1], HEADER)  # all done: report only
    assert set(again["methods"]) == set(results["methods"]) and again["progress"] == results["progress"]
    on_disk = json.loads((copy / "results.json").read_text())
    assert on_disk["methods"]["universal_ae"] == results["methods"]["universal_ae"]


def test_mean_row_needs_every_task(bench) -> None:
    _, out, _ = bench
    results = json.loads((out / "results.json").read_text())
    for entry in results["methods"].values():
        for seed in entry["per_seed"].values():
            assert ("mean" in seed) == (set(seed["tasks"]) == set(TASKS))
    assert MEAN in results["methods"]["ours"]["summary"]


def test_runs_claimed_by_another_process_are_skipped(bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, out, _ = bench
    copy = tmp_path / "bench"
    shutil.copytree(out, copy)
    calls: list[str] = []
    monkeypatch.setattr(runner, "execute_run", lambda context, spec, manifests: calls.append(spec.key))
    for key in ("ae/seed1/head_ct", "universal_ae/seed0/all"):
        (copy / "runs" / key / runner.DONE_FILE).unlink()
    busy = copy / "runs" / "universal_ae/seed0/all" / CLAIM_FILE
    busy.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))  # a live process holds it
    run_benchmark(_context(data, copy), select_methods(METHOD_NAMES), [0, 1], HEADER)
    assert calls == ["ae/seed1/head_ct"]
    assert busy.is_file() and not (copy / "runs" / "ae/seed1/head_ct" / CLAIM_FILE).exists()


def test_equal_steps_runs_take_the_steps_of_a_universal_run(bench) -> None:
    data, out, results = bench
    # tiny profile: 1 epoch, batch 8; per task 9 training normals (10 minus the validation carve)
    runs = results["methods"]["ae_steps"]["per_seed"]["0"]["runs"]
    n_all = results["methods"]["ours"]["per_seed"]["0"]["runs"]["all"]["n_train"]
    for task, run in runs.items():
        assert run["epochs"] == -(-(n_all // 8) // max(run["n_train"] // 8, 1)) > 1, task
    table4 = (out / "table4.md").read_text()
    assert "**partial: 6 of 10 runs finished**" in table4  # AE-U (both budgets) not run
    assert "Δ AUC universal AE − AE single-task steps of a universal run" in table4
    assert "*paper:" not in table4 and "as in the paper" not in table4


def test_equal_step_epochs() -> None:
    rows = [Sample(f"{t}{i}.png", t, 0, "train") for t, n in (("a", 100), ("b", 30)) for i in range(n)]
    manifests = [Manifest(root=Path("."), samples=[*rows, Sample("v.png", "a", 0, "val")])]
    config = load_config(None, ("train.epochs=4", "train.batch_size=16"))
    assert equal_step_epochs(config, manifests, "a") == 6  # 4 × (130 // 16) = 32 steps; 100 // 16 = 6 per epoch
    assert equal_step_epochs(config, manifests, "b") == 32  # one step per epoch
    with pytest.raises(ConfigError, match="no training images of task 'c'"):
        equal_step_epochs(config, manifests, "c")


def test_settings_added_later_at_their_default_still_match(bench, tmp_path: Path) -> None:
    data, out, _ = bench
    copy = tmp_path / "bench"
    shutil.copytree(out, copy)
    stored = copy / "runs" / "ae/seed0/brain_mri" / runner.RUN_SPEC_FILE
    spec = json.loads(stored.read_text())
    del spec["config"]["model"]["router_norm"]  # as written before the setting existed
    stored.write_text(json.dumps(spec))
    run_benchmark(_context(data, copy), select_methods(["ae"]), [0, 1], HEADER)  # no error: same run
    spec["config"]["model"]["router_norm"] = True
    stored.write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match="another configuration"):
        run_benchmark(_context(data, copy), select_methods(["ae"]), [0, 1], HEADER)


def test_report_only_in_a_fresh_clone_keeps_the_committed_results(tmp_path: Path) -> None:
    """Run folders are not committed: a report-only call re-renders the tables from results.json and
    leaves it as it is (the committed cpu-64 results, read unchanged)."""
    import importlib.util

    committed = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "cpu-64"
    out = tmp_path / "cpu-64"
    out.mkdir()
    for name in ("results.json", "table1.md", "table2.md"):
        shutil.copy(committed / name, out / name)
    manifest = synthetic(tmp_path / "data")
    spec = importlib.util.spec_from_file_location("run_script", committed.parent.parent / "run.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--profile", "cpu-64", "--report-only", "--threads", "1", "--out", str(out), "--data",
                        str(manifest.root / "manifest.csv")]) == 0
    assert (out / "results.json").read_bytes() == (committed / "results.json").read_bytes()
    assert (out / "table1.md").read_text() == (committed / "table1.md").read_text()
