"""Real sample scans that ship inside installed packages, for the demo: no download, no dataset.

- pydicom's ``CT_small.dcm`` (a CT slice; its tags name no body part, so it gets the prompt "Head CT slice.");
- pydicom-data's ``emri_small.dcm`` (an enhanced MR of the head, 10 frames: the middle one) and
  ``RG1_UNCR.dcm`` (a chest radiograph, CR);
- scikit-image's ``retina`` (a colour fundus photograph, written as PNG), where scikit-image is installed.

They are not from the training data's sources, so they show what a user's own scan gets: an answer with
its p-value, decision and caveats, not a measurement of accuracy.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class SampleGroup:
    """Sample files scored together, with what tells the model what they show.

    Attributes:
        path: a file, or a folder of them.
        prompt: the prompt for all of them; ``None`` (and no ``task``): each DICOM file's tags choose its task.
        description: one line for the demo's output.
        task: a task id for all of them instead of a prompt.
    """

    path: Path
    prompt: str | None
    description: str
    task: str | None = None


DICOM_SAMPLES = {
    "CT_small.dcm": ("pydicom: a CT slice", "Head CT slice."),  # its tags name no body part
    "emri_small.dcm": ("pydicom-data: an MR of the head (the middle of 10 frames)", None),
    "RG1_UNCR.dcm": ("pydicom-data: a chest radiograph", None),
}
"""File name → (what it is, its prompt; ``None``: its DICOM tags choose the task)."""
FUNDUS_PROMPT = "Retinal fundus image."


def write_sample_scans(folder: Path) -> tuple[list[SampleGroup], list[str]]:
    """Copy the installed sample scans into ``folder``.

    Returns:
        One group per sample written, and a note for each sample that is not installed here.
    """
    from pydicom.data import get_testdata_file

    groups: list[SampleGroup] = []
    notes: list[str] = []
    folder.mkdir(parents=True, exist_ok=True)
    for name, (what, prompt) in DICOM_SAMPLES.items():
        path = get_testdata_file(name, download=False)
        if path is None:
            notes.append(f"{name} ({what}) is not installed (pip install pydicom-data)")
            continue
        shutil.copyfile(path, folder / name)
        said = f"prompt {prompt!r}" if prompt else "task from its DICOM tags"
        groups.append(SampleGroup(folder / name, prompt, f"{what} ({said})"))
    try:
        from skimage.data import retina
    except ImportError:
        notes.append("the fundus photograph of scikit-image is not installed (pip install scikit-image)")
    else:
        Image.fromarray(retina()).save(folder / "retina.png")
        groups.append(SampleGroup(folder / "retina.png", FUNDUS_PROMPT,
                                  f"scikit-image: a colour fundus photograph (prompt {FUNDUS_PROMPT!r})"))
    return groups, notes
