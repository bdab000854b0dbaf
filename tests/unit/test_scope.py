"""The scope head's descriptors and stored kind, and the scope limit's leave-one-out normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmoe.trust.calibration import fit_calibration
from medmoe.trust.scope import DESCRIPTORS, ScopeHead, descriptor


def test_median_iqr_is_torch_quantile_and_ignores_a_minority_of_locations() -> None:
    features = torch.randn(3, 4, 5, 7)  # 35 locations: the quartiles fall between samples
    flat = features.flatten(2)
    q25, median, q75 = torch.quantile(flat, torch.tensor([0.25, 0.5, 0.75]), dim=2)
    torch.testing.assert_close(descriptor(features, "median_iqr"), torch.cat([median, q75 - q25], 1))
    torch.testing.assert_close(descriptor(features, "mean_std"), torch.cat([flat.mean(2), flat.std(2)], 1))
    lesion = features.clone()
    lesion[:, :, :2, :2] += 50.0  # 4 of 35 locations
    moved = {k: (descriptor(lesion, k) - descriptor(features, k)).abs().max().item() for k in DESCRIPTORS}
    assert moved["median_iqr"] < 0.1 * moved["mean_std"]
    with pytest.raises(ValueError, match="unknown scope descriptor"):
        descriptor(features, "max")


def test_a_head_keeps_its_descriptor_and_old_heads_read_as_mean_std() -> None:
    rng = np.random.default_rng(0)
    head = ScopeHead.fit([rng.normal(size=(20, 6)), rng.normal(size=(1, 6))], "mean_std")
    state = {k: v.clone() for k, v in head.state_dict().items()}
    assert ScopeHead.from_state(state).kind == "mean_std"
    del state["descriptor_code"]  # written before heads stored their descriptor
    assert ScopeHead.from_state(state).kind == "mean_std"
    robust = ScopeHead.fit([rng.normal(size=(20, 6))])
    assert ScopeHead.from_state(robust.state_dict()).kind == "median_iqr"
    features = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(head(features), ScopeHead.from_state(head.state_dict())(features))
    with pytest.raises(ValueError, match="cannot extend"):
        head.extended(robust)
    assert head.extended(head).mean.shape == (4, 6)


def test_the_scope_limit_is_normalised_leave_one_out() -> None:
    # two calibration normals per task at squared distances 1 and 9 (distances 1 and 3): normalised by
    # their own median (2) they would be 0.5 and 1.5; leave-one-out they are 1/3 and 3
    task_index = np.array([0, 0, 1, 1])
    distances = np.zeros((4, 2))
    distances[[0, 1], 0] = [1.0, 9.0]
    distances[[2, 3], 1] = [1.0, 9.0]
    calibration = fit_calibration(["a", "b"], np.zeros(4), task_index, distances, "validation normals")
    assert calibration.scope_scale == {"a": 2.0, "b": 2.0}  # a new image is normalised by the full median
    assert calibration.scope_limit == pytest.approx(np.quantile([1 / 3, 3, 1 / 3, 3], 0.99))
