"""Tables (Markdown/CSV/JSON) and figures: content, valid files, atomic writes."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image
from threadpoolctl import threadpool_limits

from medmoe.report import (
    format_mean_std,
    markdown_table,
    metrics_table,
    plot_examples,
    plot_expert_heatmap,
    plot_score_histograms,
    plot_tsne,
    seeds_metrics_table,
    write_csv,
    write_json,
)

TASKS = ["chest_xray", "brain_mri", "head_ct"]


def _row(table: str, label: str) -> list[str]:
    """The cells of the Markdown row whose first cell is ``label``."""
    for line in table.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        if cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in\n{table}")


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------------------- tables


class TestTables:
    def test_markdown_table_layout(self) -> None:
        rows = [{"name": "a|b", "x": 0.12345}, {"name": "c", "x": math.nan}, {"name": "d"}]
        table = markdown_table(rows, [("name", "Name", ""), ("x", "X", ".2f")])
        lines = table.splitlines()
        assert len(lines) == 5
        assert lines[1].replace(" ", "") == "|----|---:|"
        assert _row(table, "a\\|b")[1] == "0.12"
        assert _row(table, "c")[1] == "n/a"
        assert _row(table, "d")[1] == "n/a"

    def test_metrics_table_mean_row_in_percent(self) -> None:
        per_task = {
            "chest_xray": {"auroc": 0.8, "f1_best": 0.9, "acc_best": 0.85,
                           "n_normal": 10, "threshold_val": 0.2},
            "brain_mri": {"auroc": 0.9, "f1_best": 0.7, "acc_best": 0.8,
                          "n_normal": 7, "threshold_val": 3.0},
        }
        table = metrics_table(per_task, title="Table 1")
        assert table.startswith("### Table 1\n")
        assert _row(table, "chest_xray")[1:] == ["80.00", "90.00", "85.00"]
        assert _row(table, "MEAN")[1:] == ["85.00", "80.00", "82.50"]
        assert "†" in _row(table, "Task")[2] and "test labels" in table
        counts = metrics_table(per_task, metrics=("auroc", "n_normal", "threshold_val"), percent=False)
        assert _row(counts, "MEAN")[1:] == ["0.85", "17", "n/a"]  # counts summed, thresholds not averaged
        assert _row(counts, "brain_mri")[2:] == ["7", "3"]
        assert "test labels" not in counts and "validation normals" in counts

    def test_seeds_table_mean_row_is_spread_of_per_seed_means(self) -> None:
        runs = [
            {"a": {"auroc": 0.8}, "b": {"auroc": 0.6}},  # mean 0.7
            {"a": {"auroc": 0.9}, "b": {"auroc": 0.9}},  # mean 0.9
        ]
        table = seeds_metrics_table(runs, metrics=("auroc",))
        assert _row(table, "a")[1] == "85.00 ± 7.07"
        assert _row(table, "b")[1] == "75.00 ± 21.21"
        assert _row(table, "MEAN")[1] == "80.00 ± 14.14"
        assert "over 2 seeds" in table
        with pytest.raises(ValueError, match="tasks"):
            seeds_metrics_table([{"a": {"auroc": 0.8}}, {"b": {"auroc": 0.8}}])

    def test_format_mean_std(self) -> None:
        assert format_mean_std(88.123, 1.034) == "88.12 ± 1.03"
        assert format_mean_std(88.126, 0.0, digits=1) == "88.1 ± 0.0"
        assert format_mean_std(math.nan, 1.0) == "n/a"
        assert format_mean_std(50.0, math.nan) == "50.00"

    def test_write_json(self, tmp_path: Path) -> None:
        path = tmp_path / "out" / "metrics.json"
        obj = {"auroc": np.float32(0.123456789123), "nan": math.nan, "inf": np.inf, "n": np.int64(3),
               "arr": np.array([1.5, np.nan]), "path": Path("/x"), "t": (1, 2)}
        write_json(obj, path)
        assert json.loads(path.read_text()) == {
            "auroc": pytest.approx(0.12345679, abs=1e-9), "nan": None, "inf": None, "n": 3,
            "arr": [1.5, None], "path": "/x", "t": [1, 2],
        }
        assert "NaN" not in path.read_text()
        assert _only(path.parent) == ["metrics.json"]

    def test_write_json_bad_object_writes_nothing(self, tmp_path: Path) -> None:
        with pytest.raises(TypeError, match="object"):
            write_json({"x": object()}, tmp_path / "bad.json")
        assert _only(tmp_path) == []

    def test_write_csv(self, tmp_path: Path) -> None:
        path = tmp_path / "rows.csv"
        write_csv([{"task": "a", "auroc": 0.5}, {"task": "b", "auroc": math.nan, "ap": 1 / 3}], path)
        with path.open() as fh:
            rows = list(csv.DictReader(fh))
        assert rows == [
            {"task": "a", "auroc": "0.5", "ap": ""},
            {"task": "b", "auroc": "", "ap": "0.33333333"},
        ]
        with pytest.raises(TypeError):
            write_csv([{"x": [1, 2]}], tmp_path / "bad.csv")
        assert _only(tmp_path) == ["rows.csv"]


# -------------------------------------------------------------------------------------- figures


def _examples(n: int = 3, size: int = 32) -> dict[str, np.ndarray]:
    """A bright disc (the organ), a lesion on odd rows, errors at the disc's rim and the lesion."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    body = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.16).astype(float)
    rim = np.hypot(*np.gradient(body))
    masks = np.zeros((n, size, size), bool)
    masks[1::2, 10:15, 12:18] = True
    images = body + 0.4 * masks + 0.02 * rng.standard_normal((n, size, size))
    recon = np.broadcast_to(body, images.shape) + 0.02 * rng.standard_normal(images.shape)
    error = (images - recon) ** 2 + 0.2 * rim
    u = 2.0 * rim + 0.05 * rng.random(images.shape)
    return {"images": images, "reconstructions": recon, "error_maps": error, "hallucination_maps": u,
            "anomaly_maps": error * np.exp(-(u**2)), "masks": masks}


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
        return im.size


def _groups() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    out = {}
    for k, name in enumerate(TASKS):
        labels = np.r_[np.zeros(40, int), np.ones(30, int)]
        out[name] = (rng.gamma(4 + 2 * labels, 0.01 * (k + 1)), labels)
    return out


def _routing(n: int = 150) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    tasks = rng.integers(0, len(TASKS), n)
    logits = rng.standard_normal((n, 4)) + 3 * np.eye(4)[tasks]
    weights = np.exp(logits)
    return weights / weights.sum(1, keepdims=True), tasks


class TestFigures:
    def test_examples_png_with_and_without_hallucination_column(self, tmp_path: Path) -> None:
        ex = _examples()
        titles = ["normal", "abnormal", "normal"]
        full = plot_examples(tmp_path / "full.png", **ex, titles=titles)
        ex.pop("masks")
        ex["hallucination_maps"] = None
        ablation = plot_examples(tmp_path / "ablation.png", **ex, titles=titles)
        (w_full, h_full), (w_abl, _h_abl) = _png_size(full), _png_size(ablation)
        assert w_abl < w_full  # one column fewer
        assert h_full > 2 * 150  # three rows
        assert _only(tmp_path) == ["ablation.png", "full.png"]

    def test_examples_reject_bad_shapes_and_write_nothing(self, tmp_path: Path) -> None:
        ex = _examples()
        ex["anomaly_maps"] = ex["anomaly_maps"][:, :-1]
        with pytest.raises(ValueError, match="anomaly_maps"):
            plot_examples(tmp_path / "x.png", **ex, titles=["a", "b", "c"])
        with pytest.raises(ValueError, match="titles"):
            plot_examples(tmp_path / "x.png", **_examples(), titles=["a"])
        assert _only(tmp_path) == []

    def test_score_histograms(self, tmp_path: Path) -> None:
        path = plot_score_histograms(tmp_path / "hist.png", _groups(), "full model")
        w, h = _png_size(path)
        assert w > h  # 4 panels on a 3-wide grid: 2 rows of 3
        one_group = {"head_ct": _groups()["head_ct"]}
        single = plot_score_histograms(tmp_path / "one.png", one_group, "x", normalise=True)
        assert _png_size(single)[0] < w

    def test_score_histograms_draw_the_decision_threshold(self, tmp_path: Path) -> None:
        from PIL import Image

        one_group = {"head_ct": _groups()["head_ct"]}
        threshold = float(np.median(one_group["head_ct"][0]))
        plain = plot_score_histograms(tmp_path / "plain.png", one_group, "x")
        marked = plot_score_histograms(tmp_path / "marked.png", one_group, "x", thresholds={"head_ct": threshold},
                                       threshold_label="detect's threshold")

        def dark(path: Path) -> int:
            return int((np.asarray(Image.open(path).convert("L")) < 60).sum())

        assert dark(marked) > dark(plain) + 50  # the dashed line (and its legend entry)

    def test_expert_heatmap_including_a_task_without_images(self, tmp_path: Path) -> None:
        weights, tasks = _routing()
        path = plot_expert_heatmap(tmp_path / "experts.png", weights, tasks, [*TASKS, "fundus"])
        _png_size(path)
        with pytest.raises(ValueError, match="task indices"):
            plot_expert_heatmap(tmp_path / "bad.png", weights, tasks, TASKS[:2])
        assert _only(tmp_path) == ["experts.png"]

    def test_tsne_subsamples_deterministically(self, tmp_path: Path) -> None:
        rng = np.random.default_rng(3)
        tasks = rng.integers(0, len(TASKS), 80)
        centres = 4 * rng.standard_normal((len(TASKS), 8))
        settings = {
            "with prompts": (centres[tasks] + rng.standard_normal((80, 8)), tasks),
            "without prompts": (rng.standard_normal((80, 8)), tasks),
        }
        with threadpool_limits(1):  # t-SNE's OpenMP threads crawl on shared CI cores
            a = plot_tsne(tmp_path / "a.png", settings, TASKS, seed=0, max_points=50)
            b = plot_tsne(tmp_path / "b.png", settings, TASKS, seed=0, max_points=50)
        _png_size(a)
        assert a.read_bytes() == b.read_bytes()

    def test_other_formats_follow_the_suffix(self, tmp_path: Path) -> None:
        weights, tasks = _routing()
        assert plot_expert_heatmap(tmp_path / "e.pdf", weights, tasks, TASKS).read_bytes().startswith(b"%PDF")
        assert b"<svg" in plot_expert_heatmap(tmp_path / "e.svg", weights, tasks, TASKS).read_bytes()
        with pytest.raises(ValueError, match="suffix"):
            plot_expert_heatmap(tmp_path / "e.jpg", weights, tasks, TASKS)
        assert _only(tmp_path) == ["e.pdf", "e.svg"]

    def test_failure_mid_render_leaves_no_file_and_keeps_the_old_one(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        old = tmp_path / "hist.png"
        old.write_bytes(b"previous figure")

        def broken_savefig(self: Figure, fname: object, **kwargs: object) -> None:
            fname.write(b"\x89PNG half")  # type: ignore[attr-defined]
            raise RuntimeError("renderer crashed")

        monkeypatch.setattr(Figure, "savefig", broken_savefig)
        with pytest.raises(RuntimeError, match="renderer crashed"):
            plot_score_histograms(old, _groups(), "x")
        with pytest.raises(RuntimeError, match="renderer crashed"):
            plot_score_histograms(tmp_path / "new.png", _groups(), "x")
        assert _only(tmp_path) == ["hist.png"]
        assert old.read_bytes() == b"previous figure"

    def test_no_pyplot_figures_leak(self, tmp_path: Path) -> None:
        before = plt.get_fignums()
        weights, tasks = _routing()
        plot_expert_heatmap(tmp_path / "e.png", weights, tasks, TASKS)
        plot_score_histograms(tmp_path / "h.png", _groups(), "x")
        assert plt.get_fignums() == before
