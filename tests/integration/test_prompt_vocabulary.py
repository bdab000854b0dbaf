"""A labelled list of prompts a user might type: which must match which task, which must not match any.

Scored with the real all-MiniLM-L6-v2 embeddings of the five default task prompts (the tiny saved
model's); a prompt is *accepted* when :attr:`PromptMatch.is_confident` (similarity ≥ 0.5 and the
vocabulary check passes). Precision: accepted prompts matched to the right task / all accepted;
recall: right-task acceptances / prompts that should match.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medmoe import Detector
from medmoe.text.vocabulary import named_terms

SHOULD_MATCH: dict[str, tuple[str, ...]] = {
    "chest_xray": ("chest X-ray", "CXR", "frontal chest radiograph", "PA chest x-ray", "lung radiograph",
                   "chest radiography image", "portable chest film x-ray", "X-ray of the thorax",
                   "pneumonia chest x-ray"),
    "brain_mri": ("brain MRI", "axial brain MRI", "T2-weighted brain MR", "brain MRI slice, FLAIR",
                  "MRI of the head", "magnetic resonance image of the brain", "axial T1 brain MRI",
                  "cerebral MRI", "brain tumour MRI scan"),
    "fundus": ("retinal fundus image", "fundus photograph", "eye fundus photograph", "color fundus photography",
               "fundus image of the retina", "retina fundus photo", "fundoscopy of the eye", "fundus"),
    "breast_us": ("breast ultrasound", "breast US", "breast sonography", "ultrasound of the breast",
                  "breast ultrasound image with a lesion", "sonogram of the breast", "breast USG"),
    "head_ct": ("head CT", "non-contrast CT of the head", "brain CT scan", "head CT slice", "axial head CT",
                "CT of the brain", "computed tomography of the head", "intracranial CT"),
}

SHOULD_NOT_MATCH: tuple[str, ...] = (
    "cardiac MRI", "chest CT", "medical image", "knee MRI", "spine MRI", "abdominal CT", "shoulder MR",
    "liver ultrasound", "thyroid ultrasound", "hand X-ray", "knee radiograph", "mammogram", "PET scan of the brain",
    "histopathology slide", "photo of a cat", "a red car", "hello world", "image", "scan", "prostate MRI",
    "kidney ultrasound", "dental x-ray", "skin lesion dermoscopy", "pelvic CT", "cardiac ultrasound",
    "lumbar spine CT", "foot x-ray",
)


def test_the_list_is_big_enough_and_names_what_it_means() -> None:
    assert sum(map(len, SHOULD_MATCH.values())) + len(SHOULD_NOT_MATCH) >= 60
    assert named_terms("chest CT") == ({"chest"}, {"ct"}) and named_terms("show us the brain") == ({"head"}, set())


@pytest.fixture(scope="module")
def detector(tiny_run: Path) -> Detector:
    return Detector.load(tiny_run)


def test_prompt_matching_precision_and_recall(detector: Detector) -> None:
    accepted_right = accepted_wrong = 0
    misses, false_accepts = [], []
    for task, prompts in SHOULD_MATCH.items():
        for prompt in prompts:
            match = detector.match_prompt(prompt)
            if match.is_confident and match.task == task:
                accepted_right += 1
            elif match.is_confident:
                accepted_wrong += 1
                false_accepts.append((prompt, match.task))
            else:
                misses.append((prompt, match.task, round(match.similarity, 2), match.vocabulary))
    for prompt in SHOULD_NOT_MATCH:
        match = detector.match_prompt(prompt)
        if match.is_confident:
            accepted_wrong += 1
            false_accepts.append((prompt, match.task))
    positives = sum(map(len, SHOULD_MATCH.values()))
    precision = accepted_right / max(accepted_right + accepted_wrong, 1)
    recall = accepted_right / positives
    print(f"prompt list: precision {precision:.3f}, recall {recall:.3f} ({positives} should match, "
          f"{len(SHOULD_NOT_MATCH)} should not); misses {misses}; false accepts {false_accepts}")
    assert precision >= 0.97, false_accepts
    assert recall >= 0.9, misses


def test_untrained_organ_is_refused_under_strict(detector: Detector) -> None:
    import numpy as np

    from medmoe.errors import PromptError

    with pytest.raises(PromptError, match="heart, which the nearest task does not cover"):
        detector.predict(np.zeros((40, 40), np.float32), prompt="cardiac MRI", strict=True)
    with pytest.raises(PromptError, match="names no organ or imaging modality"):
        detector.predict(np.zeros((40, 40), np.float32), prompt="medical image", strict=True)
