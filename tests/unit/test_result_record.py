"""One declaration of a detect result's fields: the record gives the CSV columns and the REST schema, and
the decision is never replaced by the scope or prompt verdicts that stand beside it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from medmoe.api.results import DetectionResult, ResultRecord, described, field_docs
from medmoe.api.results_csv import COLUMNS, FILE_COLUMNS, csv_cell, csv_columns
from medmoe.serve.app import response_model


def _result(**changes: object) -> DetectionResult:
    base = DetectionResult(score=0.5, above_threshold=True, threshold=0.4, task="brain_mri", prompt="Brain MRI slice.",
                           prompt_similarity=1.0, anomaly_map=np.zeros((4, 6), np.float32), hallucination_map=None,
                           expert_weights=np.array([0.0, 0.7, 0.0, 0.3], np.float32),
                           image=np.zeros((4, 6), np.float32), p_value=0.01, fpr=0.05, scope_distance=3.0,
                           scope_limit=1.5, out_of_scope=True, model="run", model_sha256="0123456789ab")
    return dataclasses.replace(base, **changes)


@dataclasses.dataclass(frozen=True)
class ToyRecord(ResultRecord):
    """The record with one more field, as a contributor adds one."""

    lesion_area: float = described("Share of the image above the threshold.")


def test_a_new_record_field_reaches_the_csv_columns_and_the_rest_schema() -> None:
    assert csv_columns(ToyRecord) == (*(f.name for f in dataclasses.fields(ResultRecord)), "lesion_area",
                                      *FILE_COLUMNS)
    schema = response_model(ToyRecord).model_json_schema()
    assert schema["properties"]["lesion_area"]["description"] == "Share of the image above the threshold."
    assert set(schema["required"]) >= set(field_docs(ToyRecord))
    assert "lesion_area" not in COLUMNS and "lesion_area" not in response_model().model_json_schema()["properties"]


def test_every_field_is_documented_and_the_csv_is_the_record_then_the_files() -> None:
    docs = field_docs()
    assert all(len(text) > 10 for text in docs.values())
    assert COLUMNS == (*docs, "overlay", "maps", "dicom", "error")
    rest = response_model().model_json_schema()["properties"]
    assert [name for name in rest if name in docs] == list(docs)
    assert all(rest[name]["description"] == docs[name] for name in docs)


def test_out_of_scope_stands_beside_the_decision() -> None:
    record = _result().record()
    assert (record.decision, record.is_anomalous, record.out_of_scope) == ("anomalous", True, True)
    assert (record.scope_distance, record.scope_limit) == (3.0, 1.5)
    assert _result(above_threshold=False).record().decision == "normal"


@pytest.mark.parametrize(("changes", "decision"), [
    ({}, "anomalous"),
    ({"prompt_trusted": False}, "unsure_prompt"),
    ({"threshold": math.nan}, "undetermined"),
    ({"threshold": math.nan, "prompt_trusted": False}, "undetermined"),
])
def test_the_decision_says_when_it_cannot_be_made(changes: dict[str, object], decision: str) -> None:
    result = _result(**changes)
    assert result.decision == decision and result.is_anomalous is (decision == "anomalous")
    assert result.record().is_anomalous is result.is_anomalous


def test_experts_are_numbered_from_one_everywhere() -> None:
    result = _result()
    assert result.top_experts() == [(2, pytest.approx(0.7)), (4, pytest.approx(0.3))]
    assert result.record().top_experts == "E2 0.700, E4 0.300"


def test_csv_cells() -> None:
    assert [csv_cell(v) for v in (None, True, False, 0.123456789, 3, "x")] == ["", "true", "false", "0.123457", "3",
                                                                               "x"]
    assert csv_cell([0.5, 0.25]) == "0.5 0.25" and csv_cell(["a", "b"]) == "a | b" and csv_cell([]) == ""
    uncalibrated = _result(p_value=math.nan, fpr=math.nan, scope_distance=math.nan, scope_limit=math.nan).record()
    assert (uncalibrated.p_value, uncalibrated.out_of_scope, uncalibrated.prompt_mismatch) == (None, None, None)
