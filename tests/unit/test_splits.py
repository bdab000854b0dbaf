"""Seeded splits, the validation carve, content hashing and duplicate/leakage/conflict flags."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from medmoe.data.manifest import Manifest, Sample
from medmoe.data.splits import (
    ContentHashes,
    carve_validation,
    flag_duplicates,
    joint_groups,
    seeded_pick,
    seeded_rng,
    share,
    sort_samples,
)
from medmoe.errors import ConfigError, DatasetError


def _manifest(tmp_path: Path, rows: list[tuple[str, bytes, int, str, str]], task: str = "t") -> Manifest:
    """Rows of (name, file bytes, label, split, subclass); files are written under tmp_path."""
    samples = []
    for name, content, label, split, subclass in rows:
        (tmp_path / name).write_bytes(content)
        samples.append(Sample(path=name, task=task, label=label, split=split, subclass=subclass))
    return Manifest(root=tmp_path, samples=samples)


def test_share_rounds_half_up_and_gives_paper_counts() -> None:
    assert share(133, 99, 133) == 99
    assert share(1074, 700, 1074) == 700
    assert share(100, 90, 100) == 90
    assert share(10, 99, 133) == 7  # 7.44
    assert share(5, 1, 2) == 3  # 2.5 rounds up


def test_joint_groups_merges_chains_across_keyings() -> None:
    # items 0-1 share a patient, 1-2 share bytes, 3 is alone, 4 shares bytes with 0
    groups = joint_groups(["p1", "p1", "p2", "p3", "p4"], ["h1", "h2", "h2", "h3", "h1"])
    assert groups[0] == groups[1] == groups[2] == groups[4]
    assert groups[3] != groups[0]
    assert groups == [0, 0, 0, 1, 0]
    with pytest.raises(ValueError):
        joint_groups(["a"], ["a", "b"])


def test_seeded_pick_exact_count_whole_groups_and_seed_dependence() -> None:
    groups = [i // 2 for i in range(20)] + list(range(100, 110))  # 10 pairs, 10 singletons
    picks = {seed: seeded_pick(groups, 13, seeded_rng(seed, "x")) for seed in range(5)}
    for chosen in picks.values():
        assert sum(chosen) == 13
        for i in range(0, 20, 2):
            assert chosen[i] == chosen[i + 1]  # pairs never split
    assert picks[0] == seeded_pick(groups, 13, seeded_rng(0, "x"))
    assert len({tuple(c) for c in picks.values()}) > 1
    assert seeded_pick(groups, 13, seeded_rng(0, "x")) != seeded_pick(groups, 13, seeded_rng(0, "y"))


def test_seeded_pick_falls_short_only_when_groups_cannot_fill() -> None:
    chosen = seeded_pick(["a", "a", "b", "b"], 3, seeded_rng(0))
    assert sum(chosen) == 2
    with pytest.raises(ValueError):
        seeded_pick(["a"], 2, seeded_rng(0))


def test_negative_seed_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="seed"):
        seeded_rng(-1)


def test_content_hashes_are_sha256_of_bytes_and_cached(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"abc")
    hashes = ContentHashes()
    assert hashes(path) == hashlib.sha256(b"abc").hexdigest()
    path.write_bytes(b"changed")
    assert hashes(path) == hashlib.sha256(b"abc").hexdigest()  # read once per run
    with pytest.raises(DatasetError, match="missing.png"):
        hashes(tmp_path / "missing.png")


def _training_set(task: str, n: int) -> list[tuple[str, bytes, int, str, str]]:
    return [(f"{task}_{i}.png", f"{task}{i}".encode(), 0, "train", "normal") for i in range(n)]


def test_carve_moves_ten_percent_of_train_normals_per_task(tmp_path: Path) -> None:
    a = _manifest(tmp_path, _training_set("a", 95) + [("a_t.png", b"t", 1, "test", "x")], task="a")
    b = _manifest(tmp_path, _training_set("b", 30), task="b")
    both = Manifest(root=tmp_path, samples=a.samples + b.samples)
    carved = carve_validation(both, 0.1, seed=3)
    assert len(carved.select(split="val", task="a")) == 10  # 9.5 rounds up
    assert len(carved.select(split="train", task="a")) == 85
    assert len(carved.select(split="val", task="b")) == 3
    assert carved.select(split="test") == both.select(split="test")
    assert both.select(split="val") == []  # input untouched
    assert carved.samples == carve_validation(both, 0.1, seed=3).samples
    assert carved.samples != carve_validation(both, 0.1, seed=4).samples


def test_carve_keeps_groups_together_and_one_training_image(tmp_path: Path) -> None:
    m = _manifest(tmp_path, _training_set("a", 40))
    groups = [i // 4 for i in range(40)]  # ten groups of four
    carved = carve_validation(m, 0.2, seed=0, groups=groups)
    moved = [s.split == "val" for s in carved.samples]
    assert sum(moved) == 8
    for g in range(10):
        assert len(set(moved[4 * g: 4 * g + 4])) == 1
    tiny = _manifest(tmp_path, _training_set("z", 2))
    assert len(carve_validation(tiny, 0.9, seed=0).select(split="train")) == 1


def test_carve_leaves_tasks_with_their_own_validation_alone(tmp_path: Path) -> None:
    rows = _training_set("a", 20) + [("v.png", b"v", 0, "val", "normal")]
    carved = carve_validation(_manifest(tmp_path, rows), 0.5, seed=0)
    assert [s.path for s in carved.select(split="val")] == ["v.png"]


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_carve_rejects_bad_fractions(tmp_path: Path, fraction: float) -> None:
    with pytest.raises(ConfigError, match="fraction"):
        carve_validation(_manifest(tmp_path, _training_set("a", 3)), fraction, seed=0)


def test_flag_duplicates_leakage_duplicates_and_conflicts(tmp_path: Path) -> None:
    m = _manifest(tmp_path, [
        ("tr1.png", b"A", 0, "train", "normal"),
        ("tr2.png", b"A", 0, "train", "normal"),      # duplicate within train
        ("va1.png", b"B", 0, "val", "normal"),
        ("va2.png", b"A", 0, "val", "normal"),        # val copy of a train image
        ("te1.png", b"A", 0, "test", "normal"),       # test copy of train
        ("te2.png", b"B", 0, "test", "normal"),       # test copy of val
        ("te3.png", b"C", 1, "test", "benign"),
        ("te4.png", b"C", 1, "test", "malignant"),    # same bytes, other subclass
        ("te5.png", b"D", 0, "test", "normal"),
        ("te6.png", b"D", 1, "test", "benign"),       # same bytes, other label
        ("te7.png", b"E", 1, "test", "benign"),
    ])
    flags = {s.path: set(s.flags) for s in flag_duplicates(m).samples}
    assert flags == {
        "tr1.png": set(),
        "tr2.png": {"duplicate"},
        "va1.png": set(),
        "va2.png": {"dup_of_train"},
        "te1.png": {"dup_of_train"},
        "te2.png": {"dup_of_train"},
        "te3.png": {"label_conflict"},
        "te4.png": {"label_conflict", "duplicate"},
        "te5.png": {"label_conflict"},
        "te6.png": {"label_conflict", "duplicate"},
        "te7.png": set(),
    }
    assert all(s.flags == () for s in m.samples)  # input untouched


def test_flag_duplicates_compares_within_a_task_only(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"same")
    (tmp_path / "y.png").write_bytes(b"same")
    m = Manifest(root=tmp_path, samples=[
        Sample("x.png", "a", 0, "train"), Sample("y.png", "b", 0, "test"),
    ])
    assert all(s.flags == () for s in flag_duplicates(m).samples)


def test_sort_samples_orders_by_task_split_label_path() -> None:
    rows = [Sample("b", "t", 1, "test"), Sample("a", "t", 0, "test"), Sample("c", "t", 0, "val"),
            Sample("d", "t", 0, "train"), Sample("a", "s", 0, "test")]
    assert [(s.task, s.path) for s in sort_samples(rows)] == [
        ("s", "a"), ("t", "d"), ("t", "c"), ("t", "a"), ("t", "b")]
