"""The task registry: which organ/modality pairs medmoe knows, and the prompt of each.

A *task* is one organ imaged with one modality (e.g. brain MRI). The five built-in tasks are those of
the paper, with the prompts of its Table 4. Users add their own from a YAML file, no code change::

    tasks:
      - id: knee_mri
        organ: knee
        modality: MRI
        prompt: Knee MRI slice.
        dicom_modalities: [MR]
        dicom_body_parts: [KNEE]
      - id: head_ct_dicom
        organ: head
        modality: CT
        prompt: Head CT slice.
        window: brain              # or [40, 80]: read DICOM/NIfTI in training and detection alike

The order of a registry is the order of task ids in a trained model (task index ``i`` is the i-th
task), so it is stored in every checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medmoe.errors import ConfigError
from medmoe.io.intensity import resolve_window


def check_task_id(task_id: str) -> None:
    """Raise :class:`ConfigError` unless ``task_id`` is non-empty letters, digits and ``_``."""
    if not task_id or not task_id.replace("_", "").isalnum():
        raise ConfigError(f"task id {task_id!r} must be non-empty letters, digits and '_'")


@dataclass(frozen=True)
class Task:
    """One organ/modality pair.

    Attributes:
        id: short identifier used in manifests and checkpoints (``brain_mri``).
        organ: the organ imaged (``brain``).
        modality: the imaging modality (``MRI``).
        prompt: the text prompt the model is trained with.
        channels: 3 for a colour modality (read in colour by a colour model, ``model.in_channels: 3``, and
            gray by a gray one), 1 for a gray one (read gray; replicated for a colour model):
            :meth:`channels_for`.
        dicom_modalities: DICOM ``Modality`` codes that suggest this task (``MR``).
        dicom_body_parts: DICOM ``BodyPartExamined`` values that suggest this task (``BRAIN``).
        window: the intensity window ``(center, width)`` its DICOM and NIfTI images are read with, in
            training, evaluation and detection alike (given as a preset name, ``brain``, or any pair,
            it is resolved to a ``(center, width)`` tuple on construction);
            ``None``: each file's own window (DICOM VOI), else min-max. Raster images ignore it.
    """

    id: str
    organ: str
    modality: str
    prompt: str
    channels: int = 1
    dicom_modalities: tuple[str, ...] = field(default_factory=tuple)
    dicom_body_parts: tuple[str, ...] = field(default_factory=tuple)
    window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        check_task_id(self.id)
        if not self.prompt.strip():
            raise ConfigError(f"task {self.id!r} has an empty prompt")
        if self.channels not in (1, 3):
            raise ConfigError(f"task {self.id!r}: channels must be 1 or 3, not {self.channels}")
        if self.window is not None:
            try:
                object.__setattr__(self, "window", resolve_window(self.window))
            except ValueError as exc:
                raise ConfigError(f"task {self.id!r}: {exc}") from None

    def channels_for(self, model_channels: int) -> int:
        """The channels this task's images are read with for a model of ``model_channels`` (1 or 3): a colour
        task's in colour only for a colour model; the model replicates a gray image to its channels."""
        return min(self.channels, model_channels)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serialisable dict (round-trips through :meth:`from_dict`)."""
        data = asdict(self)
        data["dicom_modalities"] = list(self.dicom_modalities)
        data["dicom_body_parts"] = list(self.dicom_body_parts)
        data["window"] = None if self.window is None else list(self.window)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        """Build a task from a dict as written by :meth:`to_dict` or a YAML task file."""
        known = {"id", "organ", "modality", "prompt", "channels", "dicom_modalities", "dicom_body_parts", "window"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown task field(s) {sorted(unknown)}; known: {sorted(known)}")
        missing = {"id", "organ", "modality", "prompt"} - set(data)
        if missing:
            raise ConfigError(f"task {data.get('id', '?')!r} lacks field(s) {sorted(missing)}")
        return cls(
            id=str(data["id"]),
            organ=str(data["organ"]),
            modality=str(data["modality"]),
            prompt=str(data["prompt"]),
            channels=int(data.get("channels", 1)),
            dicom_modalities=tuple(str(m).upper() for m in data.get("dicom_modalities", ())),
            dicom_body_parts=tuple(str(b).upper() for b in data.get("dicom_body_parts", ())),
            window=data.get("window"),
        )


DEFAULT_TASKS: tuple[Task, ...] = (
    Task("chest_xray", "chest", "X-ray", "Chest X-ray image to evaluate the lungs.",
         dicom_modalities=("CR", "DX"), dicom_body_parts=("CHEST",)),
    Task("brain_mri", "brain", "MRI", "Brain MRI slice.",
         dicom_modalities=("MR",), dicom_body_parts=("BRAIN", "HEAD")),
    Task("fundus", "eye", "fundus photography", "Retinal fundus image.", channels=3,
         dicom_modalities=("OP", "XC"), dicom_body_parts=("EYE",)),
    Task("breast_us", "breast", "ultrasound", "Breast ultrasound image.",
         dicom_modalities=("US",), dicom_body_parts=("BREAST",)),
    Task("head_ct", "head", "CT", "Head CT slice.",
         dicom_modalities=("CT",), dicom_body_parts=("HEAD", "BRAIN", "SKULL")),
)


class TaskRegistry:
    """An ordered collection of tasks; the position of a task is its index in a model."""

    def __init__(self, tasks: Iterable[Task]) -> None:
        self._tasks: list[Task] = []
        self._index: dict[str, int] = {}
        for task in tasks:
            self.add(task)

    def add(self, task: Task) -> None:
        """Append a task; its id must be new."""
        if task.id in self._index:
            raise ConfigError(f"task id {task.id!r} is defined twice")
        self._index[task.id] = len(self._tasks)
        self._tasks.append(task)

    def __getitem__(self, task_id: str) -> Task:
        try:
            return self._tasks[self._index[task_id]]
        except KeyError:
            raise ConfigError(f"unknown task {task_id!r}; known tasks: {', '.join(self.ids)}") from None

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._index

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def ids(self) -> list[str]:
        """Task ids in index order."""
        return [t.id for t in self._tasks]

    @property
    def prompts(self) -> list[str]:
        """Prompts in index order."""
        return [t.prompt for t in self._tasks]

    def index(self, task_id: str) -> int:
        """The model index of a task id."""
        self[task_id]  # raises a clear error for unknown ids
        return self._index[task_id]

    def subset(self, task_ids: Iterable[str]) -> TaskRegistry:
        """A registry of the given tasks, in the given order."""
        return TaskRegistry(self[t] for t in task_ids)

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-serialisable form, stored in checkpoints."""
        return [t.to_dict() for t in self._tasks]

    @classmethod
    def from_list(cls, items: Iterable[dict[str, Any]]) -> TaskRegistry:
        """Inverse of :meth:`to_list`."""
        return cls(Task.from_dict(d) for d in items)


def default_registry() -> TaskRegistry:
    """The five tasks of the paper."""
    return TaskRegistry(DEFAULT_TASKS)


def load_task_file(path: str | Path, base: TaskRegistry | None = None) -> TaskRegistry:
    """Read extra tasks from a YAML file (a ``tasks:`` list) and append them to ``base``.

    Args:
        path: the YAML file.
        base: the registry to extend; the default five tasks if ``None``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"task file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"task file '{path}' is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise ConfigError(f"task file '{path}' must hold a 'tasks:' list")
    registry = TaskRegistry(base if base is not None else DEFAULT_TASKS)
    for item in data["tasks"]:
        if not isinstance(item, dict):
            raise ConfigError(f"task file '{path}': every entry of 'tasks' must be a mapping")
        registry.add(Task.from_dict(item))
    return registry
