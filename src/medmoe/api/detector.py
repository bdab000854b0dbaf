"""The Python API: load a trained model once, score images with a prompt or a task.

::

    from medmoe import Detector

    detector = Detector.load("runs/paper")                      # or "model.onnx", backend="onnx"
    result = detector.predict("chest.dcm")                        # task suggested from DICOM tags
    result = detector.predict("scan.png", prompt="axial brain MRI, T2")
    result = detector.predict("scan.png", task="brain_mri")
    result.score, result.is_anomalous, result.anomaly_map.shape  # (H, W) of the input

**Prompt, task and threshold.** A free-text prompt is embedded with the model's frozen text encoder
and given to the network as is: the router sees the prompt, as in the paper. The score is compared
with the threshold of the trained task whose prompt is nearest to it (:mod:`medmoe.api.prompt_matching`);
a weak match (similarity < :data:`~medmoe.api.prompt_matching.MIN_SIMILARITY`) is a warning in
``result.warnings`` and a :class:`~medmoe.api.prompt_matching.PromptWarning`, or a
:class:`~medmoe.errors.PromptError` with ``strict=True``. ``task=`` uses that task's trained prompt.
With neither, a DICOM file's ``Modality``/``BodyPartExamined`` suggest the task (said in
``result.warnings``); other inputs then raise a :class:`~medmoe.errors.PromptError`. Models trained
without prompts ignore the prompt but still need a task for the threshold.

**Preprocessing** is exactly training's: :func:`medmoe.io.read_image`, then
:func:`medmoe.data.transforms.preprocess_image` (channels, squash to ``R × R``). Maps come back at the
input's own size (bilinear resampling of the ``R × R`` maps).

**Backends.** ``torch`` runs a run folder from ``medmoe train``; ``onnx`` runs a file from
``medmoe export`` with onnxruntime and does not import torch, as long as every prompt is a trained
prompt or a task id — any other prompt needs the text model, which needs torch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, overload

import numpy as np

from medmoe.api.prompt_matching import PromptMatch, PromptMatcher, PromptWarning, suggest_task
from medmoe.api.results import DetectionResult
from medmoe.api.shipped import resolve_model
from medmoe.api.spec import Backend, ModelSpec
from medmoe.data.transforms import preprocess_image, resize_plane, widen_channels
from medmoe.errors import CheckpointError, ConfigError, ImageReadError, MedmoeError, PromptError
from medmoe.io import Plane, read_dicom_tags, read_plane, to_grayscale, window_for
from medmoe.io.choice import Choice
from medmoe.io.formats import image_format
from medmoe.io.policy import check_scorable, constant_note
from medmoe.output_arrays import OutputArrays
from medmoe.tasks import TaskRegistry
from medmoe.trust.calibration import DEFAULT_FPR, assess
from medmoe.trust.conformal import check_fpr

ImageInput = str | Path | Plane | np.ndarray
"""A file path, one :class:`~medmoe.io.Plane` of a file (a frame or slice: :func:`medmoe.io.planes`), or an
``(H, W)`` / ``(H, W, 3)`` array (float in ``[0, 1]``, or ``uint8``/``uint16``)."""

BACKENDS = ("torch", "onnx", "auto")
"""Backend names for :meth:`Detector.load` (``auto``: ``onnx`` for ``.onnx`` files, else ``torch``)."""


@dataclass(frozen=True)
class _Query:
    """What the model is asked for one image: the prompt, its embedding and the task for the threshold."""

    task: str
    prompt: str
    similarity: float
    embedding: np.ndarray | None
    warnings: tuple[str, ...] = ()
    trusted: bool = True


@dataclass
class PreparedImage:
    """One image read and preprocessed, with its prompt resolved: what :meth:`Detector.run` scores.

    Attributes:
        source: the file path, if the input was a file.
        image: ``(H, W)`` gray or ``(H, W, 3)`` colour in ``[0, 1]``, as read: the maps' size and the overlay.
        model_input: ``(C, R, R)``, what the network reads.
        fpr: the false-positive rate of its decision.
        notes: warnings about the image itself (a constant image).
        frame, slice: the frame or slice of the file (``None``: the file has one).
    """

    source: str | None
    image: np.ndarray
    model_input: np.ndarray
    query: _Query
    fpr: float = DEFAULT_FPR
    notes: tuple[str, ...] = ()
    frame: int | None = None
    slice: int | None = None


class Detector:
    """A trained model ready to score images.

    Args:
        backend: what runs the network (see :meth:`load`).

    Attributes:
        tasks: the model's tasks (ids, prompts, DICOM hints).
        spec: the model's metadata (thresholds, resolution, text encoder …).
        backend: the backend in use (``backend.name`` is ``torch`` or ``onnx``).
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.spec: ModelSpec = backend.spec
        self.tasks: TaskRegistry = self.spec.tasks
        self._matcher = PromptMatcher(self.spec)

    @classmethod
    def load(cls, path: str | Path | None = None, *, backend: str = "torch", device: str = "cpu",
             threads: int | None = None) -> Detector:
        """Load a model.

        Args:
            path: a run folder from ``medmoe train`` (torch), an ``.onnx`` file from ``medmoe export`` (or a
                folder holding one) for the onnx backend, or the name of an installed model package
                (:mod:`medmoe.api.shipped`); ``None``: the shipped universal model (``medmoe-universal``).
            backend: ``torch``, ``onnx``, or ``auto`` (``onnx`` when ``path`` is an ``.onnx`` file or a
                folder with one and no ``model.json``).
            device: ``cpu`` or ``cuda`` (``cuda:N`` for torch).
            threads: CPU threads of the network (``None``: the library's default, one per core). With
                torch this sets the process-wide ``torch.set_num_threads``; with onnx, the session's.

        Raises:
            CheckpointError: nothing loadable at ``path``, an unknown backend, or no ``path`` and the shipped
                model is not installed.
            ConfigError: ``threads`` below 1.
        """
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be at least 1, not {threads}")
        path = resolve_model(path)
        kind = _backend_kind(path, backend)
        if kind == "onnx":
            from medmoe.api.onnx_backend import OnnxBackend

            return cls(OnnxBackend(path, device=device, threads=threads))
        from medmoe.api.torch_backend import TorchBackend

        return cls(TorchBackend(path, device=device, threads=threads))

    def match_prompt(self, prompt: str) -> PromptMatch:
        """The trained task nearest to a free-text prompt, with the similarity (no warning is issued).

        Raises:
            PromptError: the prompt is empty.
        """
        return self._matcher.match(prompt)

    def predict(self, image: ImageInput, prompt: str | None = None, task: str | None = None, *,
                strict: bool = False, fpr: float = DEFAULT_FPR, frame: Choice = None,
                slice_index: Choice = None,
                window: tuple[float, float] | str | None = None) -> DetectionResult:
        """Score one image.

        Args:
            image: a file path (any format :func:`medmoe.io.read_image` reads), a
                :class:`~medmoe.io.Plane` or an array.
            prompt: free text describing the image (see the module docstring).
            task: a task id instead of a prompt.
            strict: a prompt that resembles no trained task, or names an organ or modality none
                has, is an error instead of a warning.
            fpr: the false-positive rate on normals the decision controls (``α``: anomalous when
                the p-value is at most ``fpr``); default :data:`~medmoe.trust.DEFAULT_FPR`.
            frame, slice_index, window: passed to :func:`medmoe.io.read_image` (files only): an
                index or ``first``/``middle``/``last`` for files with several frames or slices. Without
                ``window``, DICOM and NIfTI files are read with their task's training window
                (:attr:`medmoe.tasks.Task.window`), if it has one.

        Raises:
            ImageReadError: the file cannot be read (the error names it).
            PromptError: an empty prompt, both or (for non-DICOM input) neither of prompt and task,
                an unknown task, or (``strict``) a prompt matching no task.
        """
        results = self._predict([image], prompt, task, batch_size=1, strict=strict, fpr=fpr, frame=frame,
                                slice_index=slice_index, window=window, return_errors=False)
        return cast(DetectionResult, results[0])  # return_errors=False: errors were raised

    @overload
    def predict_batch(self, images: Sequence[ImageInput], prompt: str | None = None, task: str | None = None,
                      *, batch_size: int = 32, strict: bool = False, fpr: float = DEFAULT_FPR,
                      frame: Choice = None,
                      slice_index: Choice = None, window: tuple[float, float] | str | None = None,
                      return_errors: Literal[False] = False) -> list[DetectionResult]: ...

    @overload
    def predict_batch(self, images: Sequence[ImageInput], prompt: str | None = None, task: str | None = None,
                      *, batch_size: int = 32, strict: bool = False, fpr: float = DEFAULT_FPR,
                      frame: Choice = None,
                      slice_index: Choice = None, window: tuple[float, float] | str | None = None,
                      return_errors: Literal[True]) -> list[DetectionResult | MedmoeError]: ...

    def predict_batch(self, images: Sequence[ImageInput], prompt: str | None = None, task: str | None = None,
                      *, batch_size: int = 32, strict: bool = False, fpr: float = DEFAULT_FPR,
                      frame: Choice = None,
                      slice_index: Choice = None, window: tuple[float, float] | str | None = None,
                      return_errors: bool = False) -> list[DetectionResult] | list[DetectionResult | MedmoeError]:
        """Score many images, ``batch_size`` per forward pass (arguments as in :meth:`predict`).

        Args:
            return_errors: put the :class:`~medmoe.errors.MedmoeError` of an image that cannot be
                read (or whose task cannot be determined) in its place in the list instead of raising.
                Errors about the prompt or task given for all images are always raised.

        Returns:
            One result per image, in order.
        """
        return self._predict(images, prompt, task, batch_size=batch_size, strict=strict, fpr=fpr, frame=frame,
                             slice_index=slice_index, window=window, return_errors=return_errors)

    # --- internals ----------------------------------------------------------------------------------

    def _predict(self, images: Sequence[ImageInput], prompt: str | None, task: str | None, *, batch_size: int,
                 strict: bool, fpr: float, frame: Choice, slice_index: Choice,
                 window: tuple[float, float] | str | None,
                 return_errors: bool) -> list[DetectionResult | MedmoeError]:
        """:meth:`predict_batch`; called directly by the public methods (the warnings' stack level)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, not {batch_size}")
        check_fpr(fpr)
        query = self._query(prompt, task, strict)
        results: list[DetectionResult | MedmoeError] = []
        for start in range(0, len(images), batch_size):
            prepared: list[PreparedImage | MedmoeError] = []
            for item in images[start:start + batch_size]:
                try:
                    prepared.append(self._prepare(item, query, frame, slice_index, window, fpr))
                except MedmoeError as exc:
                    if not return_errors:
                        raise
                    prepared.append(exc)
            results.extend(self._run(prepared))
        return results

    def check_request(self, prompt: str | None = None, task: str | None = None, *, strict: bool = False,
                      fpr: float = DEFAULT_FPR) -> None:
        """Raise now the error :meth:`predict_batch` would raise for these arguments whatever the images
        (both or an unknown task, an empty prompt, under ``strict`` a prompt matching no task, a bad
        ``fpr``), before any image is read or any output written.

        Raises:
            PromptError, ConfigError: as :meth:`predict`.
        """
        check_fpr(fpr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PromptWarning)
            self._query(prompt, task, strict)

    def prepare(self, image: ImageInput, prompt: str | None = None, task: str | None = None, *,
                strict: bool = False, fpr: float = DEFAULT_FPR, frame: Choice = None, slice_index: Choice = None,
                window: tuple[float, float] | str | None = None) -> PreparedImage:
        """The first half of :meth:`predict`: read, preprocess and resolve the prompt, without running the
        network — for callers that gather images of many requests into one batch (:meth:`run`).

        Raises:
            As :meth:`predict`.
        """
        check_fpr(fpr)
        return self._prepare(image, self._query(prompt, task, strict), frame, slice_index, window, fpr)

    def run(self, prepared: Sequence[PreparedImage]) -> list[DetectionResult]:
        """Score prepared images (any mix of prompts, tasks and rates) in one forward pass."""
        return cast(list[DetectionResult], self._run(list(prepared)))

    def _query(self, prompt: str | None, task: str | None, strict: bool) -> _Query | None:
        """Resolve the prompt or task given for all images (``None``: decide per image)."""
        if prompt is not None and task is not None:
            raise PromptError("pass either a prompt or a task, not both")
        if task is not None:
            if task not in self.tasks:
                raise PromptError(f"unknown task {task!r}; this model knows: {', '.join(self.tasks.ids)}")
            return self._task_query(task)
        if prompt is None:
            return None
        match = self._matcher.match(prompt)
        notes: tuple[str, ...] = ()
        if not match.is_confident:
            if strict:
                raise PromptError(match.warning())
            warnings.warn(match.warning(), PromptWarning, stacklevel=4)  # the caller of predict*
            notes = (match.warning() + "; the decision is 'unsure_prompt' (prompts are English)",)
        embedding = self._matcher.embed(prompt) if self.spec.uses_prompt else None
        return _Query(task=match.task, prompt=prompt, similarity=match.similarity, embedding=embedding,
                      warnings=notes, trusted=match.is_confident)

    def _task_query(self, task: str, note: str | None = None) -> _Query:
        """The query of a task: its trained prompt (the stored embedding; no text model runs)."""
        text = self.tasks[task].prompt
        embedding = self._matcher.embed(text) if self.spec.uses_prompt else None
        return _Query(task=task, prompt=text, similarity=1.0, embedding=embedding,
                      warnings=(note,) if note else ())

    def _prepare(self, item: ImageInput, query: _Query | None, frame: Choice, slice_index: Choice,
                 window: tuple[float, float] | str | None, fpr: float) -> PreparedImage:
        """Read, preprocess and (without a query) pick the task from DICOM tags."""
        if isinstance(item, np.ndarray):
            if frame is not None or slice_index is not None or window is not None:
                raise ImageReadError("<array>", "frame, slice_index and window apply to files, not arrays")
            source, decoded, plane = None, _unit_image(item), None
        else:
            plane = item if isinstance(item, Plane) else Plane(Path(item), frame=frame, slice_index=slice_index)
            if plane is item and (frame is not None or slice_index is not None):
                raise ImageReadError(plane.path, "a Plane carries its own frame/slice; do not pass frame= or "
                                                 "slice_index= with it")
            source = str(plane.path)
            if query is None and image_format(source) == "dicom":
                query = self._query_from_tags(source)  # before the pixels: the task may set the window
            if window is None and query is not None:  # the task's training window, where it applies
                window = window_for(source, self.tasks[query.task].window)
            decoded = read_plane(plane, window=window)
        check_scorable(source or "<array>", decoded)
        if query is None:
            query = self._query_from_tags(source)
        channels = self.tasks[query.task].channels_for(self.spec.channels)
        model_input = widen_channels(preprocess_image(decoded, channels, self.spec.resolution), self.spec.channels)
        constant = constant_note(decoded)
        shown = decoded if decoded.ndim == 3 else to_grayscale(decoded)  # colour stays colour on the overlay
        return PreparedImage(source=source, image=shown, model_input=model_input, query=query,
                             fpr=fpr, notes=(constant,) if constant else (),
                             frame=None if plane is None else plane.frame_number,
                             slice=None if plane is None else plane.slice_number)

    def _query_from_tags(self, source: str | None) -> _Query:
        """Suggest the task of a DICOM file from its tags; other inputs need a prompt or task."""
        if source is None or image_format(source) != "dicom":
            raise PromptError(f"'{source or '<array>'}': no prompt or task given; describe the image in a prompt "
                              f"(e.g. 'Brain MRI slice.') or choose a task ({', '.join(self.tasks.ids)}); only "
                              "DICOM files can have their task suggested from their tags")
        tags = read_dicom_tags(source)
        try:
            task = suggest_task(tags, self.tasks)
        except PromptError as exc:
            raise PromptError(f"'{source}': no prompt or task given and {exc}") from None
        note = (f"task {task.id!r} suggested from DICOM tags (Modality={tags['Modality'] or '(none)'}, "
                f"BodyPartExamined={tags['BodyPartExamined'] or '(none)'}); pass a prompt or task to override")
        return self._task_query(task.id, note)

    def _run(self, prepared: list[PreparedImage | MedmoeError]) -> list[DetectionResult | MedmoeError]:
        """Run the backend on the prepared images of one batch; errors keep their place."""
        ok = [p for p in prepared if isinstance(p, PreparedImage)]
        if not ok:
            return [p for p in prepared if isinstance(p, MedmoeError)]  # all of them
        images = np.stack([p.model_input for p in ok])
        text = np.stack([p.query.embedding for p in ok]) if self.spec.uses_prompt else None
        raw = self.backend.run(images, text)
        results = iter(_result(p, i, raw, self.spec) for i, p in enumerate(ok))
        return [next(results) if isinstance(p, PreparedImage) else p for p in prepared]


def _result(prepared: PreparedImage, row: int, raw: OutputArrays, spec: ModelSpec) -> DetectionResult:
    """The :class:`DetectionResult` of row ``row`` of a backend's output."""
    fpr = prepared.fpr
    shape = prepared.image.shape[:2]
    query = prepared.query
    score = float(raw.score[row])
    notes = [*query.warnings, *prepared.notes]
    trust = None
    if spec.calibration is None:
        threshold = spec.decision_threshold(query.task, fpr)
        notes.append("the model was trained before calibrated outputs existed: no p-value, mismatch or "
                     "out-of-scope check (run 'medmoe calibrate' on it); the decision uses its percentile threshold")
    else:
        distances = None if raw.scope_distances is None else raw.scope_distances[row]
        trust = assess(spec.calibration, spec.tasks.ids, query.task, score, fpr, distances)
        threshold = trust.threshold
        notes.extend(trust.notes)
    if math.isnan(threshold):
        notes.append(f"the model has no threshold for task {query.task!r} (no validation normals when it was "
                     "trained): the decision is undetermined")
    u, weights = raw.hallucination_map, raw.router_weights
    return DetectionResult(
        score=score,
        above_threshold=bool(score > threshold),
        threshold=threshold,
        task=query.task,
        prompt=query.prompt,
        prompt_similarity=query.similarity,
        anomaly_map=resize_plane(raw.required("anomaly_map")[row], shape),
        hallucination_map=None if u is None else resize_plane(np.abs(u[row]).mean(axis=0), shape),
        expert_weights=np.zeros(0, np.float32) if weights is None else weights[row].astype(np.float32),
        image=prepared.image,
        source=prepared.source,
        frame=prepared.frame,
        slice=prepared.slice,
        prompt_trusted=query.trusted,
        warnings=notes,
        p_value=math.nan if trust is None else trust.p_value,
        fpr=math.nan if trust is None else trust.fpr,
        p_value_text="" if trust is None else trust.explanation,
        resembles=None if trust is None else trust.resembles,
        prompt_mismatch=False if trust is None else trust.prompt_mismatch,
        out_of_scope=False if trust is None else trust.out_of_scope,
        scope_distance=math.nan if trust is None else trust.scope_distance,
        scope_limit=math.nan if trust is None else trust.scope_limit,
        model=spec.label,
        model_sha256=spec.weights_sha256[:12],
    )


def _unit_image(array: np.ndarray) -> np.ndarray:
    """An in-memory image as ``float32`` in ``[0, 1]`` (``uint8``/``uint16`` scaled by their range)."""
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)) or min(array.shape[:2]) < 1:
        raise ImageReadError("<array>", f"expected an (H, W) or (H, W, 3) image, got shape {array.shape}")
    if array.dtype in (np.uint8, np.uint16):
        return (array / np.iinfo(array.dtype).max).astype(np.float32)
    if not np.issubdtype(array.dtype, np.floating):
        raise ImageReadError("<array>", f"pixel type {array.dtype} is not supported; pass float in [0, 1], uint8 "
                                        "or uint16")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ImageReadError("<array>", "float pixels must be finite and in [0, 1]; scale the image first")
    return np.ascontiguousarray(array, dtype=np.float32)


def _backend_kind(path: Path, backend: str) -> str:
    """``torch`` or ``onnx`` for a path and a requested backend name."""
    if backend not in BACKENDS:
        raise CheckpointError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "torch" and path.suffix.lower() == ".onnx":
        raise CheckpointError(f"'{path}' is an ONNX export; load it with backend='onnx' (or 'auto')")
    if backend != "auto":
        return backend
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if path.is_dir() and not (path / "model.json").exists() and any(path.glob("*.onnx")):
        return "onnx"
    return "torch"
