"""Metrics against hand-computed values and scikit-learn on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from medmoe.errors import MedmoeError
from medmoe.metrics import (
    IMAGE_METRIC_KEYS,
    MetricInputError,
    best_f1_threshold,
    bootstrap_intervals,
    fit_threshold,
    image_metrics,
    mean_over_tasks,
    pixel_metrics,
    routing_accuracy,
    summarise_seeds,
    weighted_image_metrics,
)

# Hand case: descending scores 0.8(+) 0.4(-) 0.35(+) 0.1(-).
# thr 0.8: TP1 FP0 -> F1 2/3; 0.4: TP1 FP1 -> 1/2; 0.35: TP2 FP1 -> 4/5; 0.1: TP2 FP2 -> 2/3.
SCORES = np.array([0.1, 0.4, 0.35, 0.8])
LABELS = np.array([0, 0, 1, 1])


def test_error_type_is_value_error_and_medmoe_error() -> None:
    assert issubclass(MetricInputError, ValueError)
    assert issubclass(MetricInputError, MedmoeError)


class TestFitThreshold:
    def test_percentile_of_validation_normals(self) -> None:
        # 95th percentile of 1..100 with linear interpolation: rank 0.95·99 = 94.05 → 95.05.
        assert fit_threshold(np.arange(1, 101)) == pytest.approx(95.05)
        assert fit_threshold(np.arange(1, 101), percentile=50) == pytest.approx(50.5)
        assert fit_threshold(np.array([3.0])) == 3.0

    @pytest.mark.parametrize("bad", [np.array([]), np.array([0.1, np.nan]), np.array([[0.1, 0.2]])])
    def test_bad_scores_raise(self, bad: np.ndarray) -> None:
        with pytest.raises(ValueError):
            fit_threshold(bad)

    def test_empty_error_says_so(self) -> None:
        with pytest.raises(MetricInputError, match="empty"):
            fit_threshold([])

    def test_percentile_out_of_range(self) -> None:
        with pytest.raises(ValueError, match="percentile"):
            fit_threshold(np.arange(5), percentile=101)


class TestBestF1:
    def test_hand_case(self) -> None:
        thr, f1, acc = best_f1_threshold(SCORES, LABELS)
        assert thr == 0.35
        assert f1 == pytest.approx(0.8)
        assert acc == pytest.approx(0.75)

    def test_ties_go_to_the_highest_threshold(self) -> None:
        # descending 4(+) 3(-) 2(-) 1(+): F1 = 2/3 at thr 4 (TP1 FP0) and at thr 1 (TP2 FP2).
        scores, labels = np.array([4.0, 3.0, 2.0, 1.0]), np.array([1, 0, 0, 1])
        assert best_f1_threshold(scores, labels) == (4.0, pytest.approx(2 / 3), pytest.approx(0.75))
        order = np.array([2, 0, 3, 1])
        assert best_f1_threshold(scores[order], labels[order])[0] == 4.0

    def test_matches_brute_force_over_distinct_scores(self) -> None:
        rng = np.random.default_rng(0)
        for _ in range(5):
            labels = rng.integers(0, 2, 60)
            scores = np.round(rng.random(60) + 0.3 * labels, 1)  # coarse: many tied scores
            candidates = np.unique(scores)[::-1]
            f1s = [f1_score(labels, scores >= t) for t in candidates]
            best = int(np.argmax(f1s))
            thr, f1, acc = best_f1_threshold(scores, labels)
            assert thr == candidates[best]
            assert f1 == pytest.approx(f1s[best])
            assert acc == pytest.approx(np.mean((scores >= thr) == labels))

    def test_one_class_gives_nan(self) -> None:
        assert all(math.isnan(v) for v in best_f1_threshold(SCORES, np.zeros(4, int)))


class TestImageMetrics:
    def test_exact_keys_and_values(self) -> None:
        m = image_metrics(SCORES, LABELS, threshold_val=0.37)
        assert tuple(m.to_dict()) == IMAGE_METRIC_KEYS
        assert m.auroc == pytest.approx(roc_auc_score(LABELS, SCORES)) == pytest.approx(0.75)
        assert m.ap == pytest.approx(average_precision_score(LABELS, SCORES))
        assert (m.threshold_best, m.f1_best, m.acc_best) == (0.35, pytest.approx(0.8), 0.75)
        # thr 0.37 flags 0.4(-) and 0.8(+): TP1 FP1 FN1 TN1.
        assert m.sensitivity_val == 0.5
        assert m.specificity_val == 0.5
        assert m.acc_val == 0.5
        assert m.f1_val == pytest.approx(0.5)
        assert m.threshold_val == 0.37
        assert (m.n_normal, m.n_abnormal) == (2, 2)

    def test_val_threshold_is_strictly_above(self) -> None:
        m = image_metrics(SCORES, LABELS, threshold_val=0.35)  # 0.35 itself is not flagged
        assert m.sensitivity_val == 0.5
        assert m.specificity_val == 0.5

    def test_auroc_below_half_is_not_flipped(self) -> None:
        m = image_metrics(-SCORES, LABELS, threshold_val=None)
        assert m.auroc == pytest.approx(0.25)
        assert m.auroc == pytest.approx(roc_auc_score(LABELS, -SCORES))

    def test_no_validation_threshold_gives_nan(self) -> None:
        m = image_metrics(SCORES, LABELS, threshold_val=None)
        for key in ("f1_val", "acc_val", "sensitivity_val", "specificity_val", "threshold_val"):
            assert math.isnan(getattr(m, key))
        assert m.auroc == pytest.approx(0.75)

    def test_one_class_gives_nan_not_an_exception(self) -> None:
        normals = image_metrics(SCORES, np.zeros(4, int), threshold_val=0.5)
        for key in ("auroc", "ap", "f1_best", "acc_best", "threshold_best", "sensitivity_val"):
            assert math.isnan(getattr(normals, key))
        assert normals.specificity_val == 0.75  # 0.8 is flagged
        assert normals.acc_val == 0.75
        assert normals.f1_val == 0.0  # one false alarm, nothing to find
        abnormals = image_metrics(SCORES, np.ones(4, bool), threshold_val=0.3)
        assert math.isnan(abnormals.auroc) and math.isnan(abnormals.specificity_val)
        assert abnormals.sensitivity_val == 0.75
        assert (abnormals.n_normal, abnormals.n_abnormal) == (0, 4)

    @pytest.mark.parametrize(
        ("scores", "labels", "match"),
        [
            ([0.1, np.nan, 0.3], [0, 1, 1], "NaN"),
            ([0.1, np.inf, 0.3], [0, 1, 1], "NaN/inf"),
            ([0.1, 0.2, 0.3], [0, 1, 2], "only 0"),
            ([0.1, 0.2, 0.3], [0, 1], "shape"),
            ([], [], "empty"),
        ],
    )
    def test_bad_input_raises_one_clear_error(self, scores: list, labels: list, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            image_metrics(np.array(scores), np.array(labels), threshold_val=None)

    def test_non_finite_threshold_raises(self) -> None:
        with pytest.raises(ValueError, match="threshold_val"):
            image_metrics(SCORES, LABELS, threshold_val=math.nan)


class TestPixelMetrics:
    def _masks(self) -> np.ndarray:
        masks = np.zeros((3, 16, 16), bool)
        masks[0, 4:8, 4:8] = True
        masks[2, 10:14, 2:5] = True
        return masks  # image 1 is a normal: empty mask

    def test_perfect_map_scores_one(self) -> None:
        masks = self._masks()
        maps = masks.astype(np.float32) + 0.01
        m = pixel_metrics(maps, masks)
        assert m.pixel_auroc == 1.0
        assert m.dice_best == 1.0
        assert m.n_images_with_mask == 2
        assert pixel_metrics(-maps, masks).pixel_auroc == 0.0  # not flipped

    def test_matches_sklearn_and_hand_dice(self) -> None:
        rng = np.random.default_rng(1)
        masks = self._masks()
        maps = rng.random(masks.shape) + masks
        m = pixel_metrics(maps, masks)
        assert m.pixel_auroc == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
        predicted = maps >= m.threshold_dice_best
        dice = 2 * (predicted & masks).sum() / (predicted.sum() + masks.sum())
        assert m.dice_best == pytest.approx(dice)

    def test_dice_by_hand(self) -> None:
        # values 0, 1/3, 2/3, 1 with lesion at 1/3 and 1. Best: flag {1/3, 2/3, 1} → 2·2/(3+2) = 0.8.
        maps = np.array([[[0.0, 1 / 3, 2 / 3, 1.0]]])
        masks = np.array([[[0, 1, 0, 1]]])
        m = pixel_metrics(maps, masks)
        assert m.dice_best == pytest.approx(0.8)
        assert 0.0 < m.threshold_dice_best <= 1 / 3

    def test_no_lesion_gives_nan(self) -> None:
        m = pixel_metrics(np.random.default_rng(0).random((2, 4, 4)), np.zeros((2, 4, 4), bool))
        assert math.isnan(m.pixel_auroc) and math.isnan(m.dice_best)
        assert m.n_images_with_mask == 0

    def test_bad_input(self) -> None:
        with pytest.raises(ValueError, match="shape"):
            pixel_metrics(np.zeros((2, 4, 4)), np.zeros((2, 4, 5), bool))
        with pytest.raises(ValueError, match="NaN"):
            pixel_metrics(np.full((1, 2, 2), np.nan), np.zeros((1, 2, 2), bool))
        with pytest.raises(ValueError, match="3-D"):
            pixel_metrics(np.zeros((4, 4)), np.zeros((4, 4), bool))


class TestRouting:
    def test_top_expert_matches_task(self) -> None:
        weights = np.array([[0.7, 0.3, 0.0], [0.6, 0.4, 0.0], [0.1, 0.1, 0.8], [0.0, 0.9, 0.1]])
        assert routing_accuracy(weights, np.array([0, 1, 2, 1])) == 0.75

    def test_bad_task_index(self) -> None:
        with pytest.raises(ValueError, match=r"\[0, 2\)"):
            routing_accuracy(np.ones((2, 2)), np.array([0, 2]))
        with pytest.raises(ValueError, match="integers"):
            routing_accuracy(np.ones((2, 2)), np.array([0.0, 1.0]))


class TestSeedsAndTasks:
    def test_summarise_seeds(self) -> None:
        assert summarise_seeds([1.0, 2.0, 3.0]) == (2.0, 1.0)  # ddof=1
        assert summarise_seeds([0.5]) == (0.5, 0.0)
        assert all(math.isnan(v) for v in summarise_seeds([0.8, math.nan, 0.9]))
        with pytest.raises(ValueError):
            summarise_seeds([])

    def test_mean_over_tasks(self) -> None:
        per_task = {
            "a": {"auroc": 0.8, "threshold_val": 0.1, "n_normal": 10, "pixel_auroc": 0.7},
            "b": {"auroc": 0.6, "threshold_val": 5.0, "n_normal": 5},
        }
        assert mean_over_tasks(per_task) == {"auroc": pytest.approx(0.7), "n_normal": 15}
        with pytest.raises(ValueError):
            mean_over_tasks({})


def test_metric_kinds_decide_the_mean_row_and_the_table_format() -> None:
    from medmoe.metrics import metric_kind

    assert [metric_kind(k) for k in ("n_normal", "threshold_val", "threshold_best", "auroc", "dice_best")] == [
        "count", "threshold", "threshold", "fraction", "fraction"]
    mean = mean_over_tasks({"a": {"auroc": 0.5, "n_normal": 3, "threshold_val": 9.0},
                            "b": {"auroc": 1.0, "n_normal": 4, "threshold_val": 1.0}})
    assert mean == {"auroc": 0.75, "n_normal": 7}


def test_weighted_metrics_equal_scikit_learn_with_sample_weights() -> None:
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(150), np.ones(90)]
    scores = np.round(rng.normal(size=240) + labels, 1)  # rounded: ties, which share a threshold
    weights = rng.integers(0, 4, size=(5, 240)).astype(float)
    got = weighted_image_metrics(scores, labels, weights, threshold_val=0.7)
    for r in range(5):
        assert got["auroc"][r] == pytest.approx(roc_auc_score(labels, scores, sample_weight=weights[r]), abs=1e-12)
        assert got["ap"][r] == pytest.approx(average_precision_score(labels, scores, sample_weight=weights[r]),
                                             abs=1e-12)
    unweighted = weighted_image_metrics(scores, labels, np.ones((1, 240)), threshold_val=0.7)
    expected = image_metrics(scores, labels, threshold_val=0.7).to_dict()
    assert {k: float(v[0]) for k, v in unweighted.items()} == pytest.approx({k: expected[k] for k in unweighted})


def test_bootstrap_intervals_cover_the_estimate_shrink_with_data_and_are_reproducible() -> None:
    rng = np.random.default_rng(0)

    def widths(n: int) -> dict[str, float]:
        labels = np.r_[np.zeros(n), np.ones(n)]
        scores = rng.normal(size=2 * n) + labels
        point = image_metrics(scores, labels, threshold_val=1.0).to_dict()
        intervals = bootstrap_intervals(scores, labels, threshold_val=1.0)
        assert intervals == bootstrap_intervals(scores, labels, threshold_val=1.0)  # seeded
        for name, (low, high) in intervals.items():
            assert low <= point[name] <= high, name
        return {name: high - low for name, (low, high) in intervals.items()}

    small, large = widths(30), widths(1000)
    assert all(large[name] < small[name] / 2 for name in small)  # ~1/sqrt(n): 5.8x narrower


def test_bootstrap_intervals_are_nan_with_one_class_or_no_threshold() -> None:
    scores = np.linspace(0, 1, 20)
    assert all(np.isnan(v).all() for v in bootstrap_intervals(scores, np.zeros(20), threshold_val=0.5).values())
    intervals = bootstrap_intervals(scores, np.r_[np.zeros(10), np.ones(10)], threshold_val=None)
    assert np.isnan(intervals["f1_val"]).all() and not np.isnan(intervals["auroc"]).any()
