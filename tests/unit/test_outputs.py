"""medmoe.output_arrays.OutputArrays: the one numpy record of a model's outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmoe.model.output import to_arrays
from medmoe.output_arrays import DEPLOYED_OUTPUTS, OutputArrays


def test_batches_concatenate_and_absent_fields_stay_absent() -> None:
    first = OutputArrays(score=np.zeros(2), anomaly_map=np.zeros((2, 4, 4)), features=np.ones((2, 3)))
    second = OutputArrays(score=np.ones(1), anomaly_map=np.ones((1, 4, 4)))
    joined = OutputArrays.concatenate([first, second])
    assert joined.score.tolist() == [0, 0, 1] and joined.required("anomaly_map").shape == (3, 4, 4)
    assert joined.features is None  # one batch lacked them
    with pytest.raises(ValueError, match="no features"):
        joined.required("features")
    assert OutputArrays.concatenate([]).score.shape == (0,)


def test_tensors_become_float32_arrays_under_the_onnx_names() -> None:
    named = {"score": torch.ones(2, dtype=torch.float64), "anomaly_map": torch.zeros(2, 3, 3),
             "hallucination_map": None, "router_weights": torch.full((2, 5), 0.2, requires_grad=True),
             "scope_distances": None}
    assert tuple(named) == DEPLOYED_OUTPUTS
    arrays = to_arrays(named)
    assert arrays.score.dtype == np.float32 and arrays.hallucination_map is None
    assert arrays.required("router_weights").shape == (2, 5)
