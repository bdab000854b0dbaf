"""Which organs and modalities a text names: the check that a prompt asks for something trained.

Sentence embeddings follow the modality words more than the organ ("cardiac MRI" lands near "Brain
MRI slice."), so a similarity floor alone lets untrained organs through. This module names the
organ and modality groups a text mentions (:data:`ORGANS`, :data:`MODALITIES`; whole words,
case-insensitive, except the all-caps abbreviations, which must be written so: ``US`` is ultrasound,
``us`` is not). A prompt is only matched to a task when every organ and modality it names is one the
task covers, and it names at least one (:func:`vocabulary_problem`).
"""

from __future__ import annotations

import re
from functools import lru_cache

ORGANS: dict[str, tuple[str, ...]] = {
    "head": ("head", "brain", "cerebral", "cranial", "intracranial", "skull", "neuro", "cerebrum"),
    "chest": ("chest", "lung", "lungs", "thorax", "thoracic", "pulmonary", "CXR", "pneumonia"),
    "eye": ("eye", "retina", "retinal", "fundus", "ocular", "ophthalmic", "optic disc", "macula"),
    "breast": ("breast", "breasts", "mammary"),
    "heart": ("heart", "cardiac", "coronary", "myocardial"),
    "spine": ("spine", "spinal", "vertebra", "vertebral", "lumbar"),
    "abdomen": ("abdomen", "abdominal", "liver", "hepatic", "kidney", "kidneys", "renal", "pancreas", "bowel",
                "colon", "gallbladder", "spleen"),
    "pelvis": ("pelvis", "pelvic", "prostate", "uterus", "ovary", "bladder"),
    "knee": ("knee", "knees"),
    "shoulder": ("shoulder",),
    "hip": ("hip", "hips"),
    "hand": ("hand", "hands", "wrist", "finger"),
    "foot": ("foot", "feet", "ankle"),
    "neck": ("neck", "thyroid"),
    "skin": ("skin", "dermoscopy", "dermoscopic", "mole"),
    "teeth": ("dental", "tooth", "teeth"),
}
"""Organ groups and the words that name them."""

MODALITIES: dict[str, tuple[str, ...]] = {
    "mri": ("MRI", "MR", "magnetic resonance", "T1", "T2", "FLAIR", "T1-weighted", "T2-weighted"),
    "ct": ("CT", "computed tomography", "CAT scan", "tomogram"),
    "x-ray": ("x-ray", "xray", "radiograph", "radiography", "CXR", "plain film", "roentgen"),
    "ultrasound": ("ultrasound", "sonography", "sonogram", "US", "USG", "echography", "sonographic"),
    "fundus photography": ("fundus", "fundus photograph", "fundus photography", "retinal photograph",
                           "fundoscopy", "fundus image"),
    "pet": ("PET", "positron emission"),
    "histopathology": ("histopathology", "histology", "pathology slide", "microscopy", "biopsy"),
    "mammography": ("mammogram", "mammography"),
    "endoscopy": ("endoscopy", "endoscopic", "colonoscopy"),
}
"""Modality groups and the words that name them."""


def _pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    exact = [re.escape(w) for w in words if w.isupper() or any(c.isdigit() for c in w)]
    loose = [re.escape(w) for w in words if w not in exact and not (w.isupper() or any(c.isdigit() for c in w))]
    parts = [rf"(?-i:\b(?:{'|'.join(exact)})\b)"] if exact else []
    parts += [rf"\b(?:{'|'.join(loose)})\b"] if loose else []
    return re.compile("|".join(parts), re.IGNORECASE)


@lru_cache(maxsize=1)
def _patterns() -> tuple[dict[str, re.Pattern[str]], dict[str, re.Pattern[str]]]:
    return ({k: _pattern(v) for k, v in ORGANS.items()}, {k: _pattern(v) for k, v in MODALITIES.items()})


def named_terms(text: str) -> tuple[set[str], set[str]]:
    """The organ groups and modality groups ``text`` names."""
    organs, modalities = _patterns()
    return ({k for k, p in organs.items() if p.search(text)}, {k for k, p in modalities.items() if p.search(text)})


def vocabulary_problem(prompt: str, task_text: str) -> str | None:
    """Why ``prompt`` does not ask for the task described by ``task_text`` (its organ, modality and
    prompt), or ``None`` when every organ and modality the prompt names is the task's and it names one."""
    organs, modalities = named_terms(prompt)
    if not organs and not modalities:
        return "it names no organ or imaging modality"
    task_organs, task_modalities = named_terms(task_text)
    extra = sorted((organs - task_organs) | (modalities - task_modalities))
    if extra:
        return f"it names {', '.join(extra)}, which the nearest task does not cover"
    return None
