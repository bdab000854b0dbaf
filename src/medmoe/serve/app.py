"""The HTTP service: a FastAPI app around one loaded :class:`~medmoe.api.detector.Detector`.

Endpoints:

- ``POST /v1/detect`` — multipart form: ``file`` (PNG/JPEG/TIFF/BMP, DICOM or NIfTI) and ``prompt``
  *or* ``task`` (a DICOM file may have neither: its tags suggest the task), optional ``strict``,
  ``fpr`` (the false-positive rate the decision controls), ``frame``/``slice_index`` (which frame
  or slice of a file with several) and ``window`` (DICOM/NIfTI intensity window). Answers :func:`response_model`:
  :meth:`DetectionResult.to_dict` (score, p-value, decision, the task the image resembles,
  mismatch and out-of-scope flags, warnings …) plus ``overlay_png`` (base64 PNG of the anomaly map
  over the image) and ``timing_ms``.
- ``GET /v1/tasks`` — the model's tasks (id, organ, modality, prompt, threshold).
- ``GET /healthz`` — ``{"status": "ok"}``, the model's facts and the medmoe version.
- ``GET /`` — a one-page web UI (no external assets); ``/docs`` — the OpenAPI UI.

Errors are ``{"detail": "<one clear sentence>"}``: ``413`` upload too large, ``415`` not an image
format medmoe reads, ``422`` no file, an unreadable image, or a bad prompt or task.

Requests are read and preprocessed in FastAPI's thread pool (the endpoint is a plain ``def``) and
scored together by one thread (:mod:`medmoe.serve.batching`): up to 16 images per forward pass.
The limits are stated in ``/healthz``. A failed request changes nothing, so the service keeps serving.
"""

from __future__ import annotations

import base64
import dataclasses
import time
import typing
from importlib.resources import files
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, create_model

from medmoe import __version__
from medmoe.api import Detector
from medmoe.api.render import render_result
from medmoe.api.results import ResultRecord, finite_or_none
from medmoe.errors import ConfigError, MedmoeError
from medmoe.io import policy
from medmoe.io.choice import ALL, parse_choice
from medmoe.io.intensity import resolve_window
from medmoe.serve.batching import Batcher
from medmoe.serve.limits import BodySizeLimit
from medmoe.serve.uploads import ACCEPTED_FORMATS, sniff_suffix, upload_as_file
from medmoe.trust import DEFAULT_FPR

MIB = 1024 * 1024
FORM_OVERHEAD_BYTES = 64 * 1024
"""Room for the multipart boundaries and the text fields on top of the file size limit."""

_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"description": "The upload is larger than the server's limit."},
    415: {"description": f"The file is not an image format medmoe reads ({ACCEPTED_FORMATS})."},
    422: {"description": "No file, an unreadable image, or an empty/unrelated prompt or unknown task."},
}


class Timing(BaseModel):
    """Where the request's time went, in milliseconds."""

    predict: float
    overlay: float
    total: float


def response_model(record: type[ResultRecord] = ResultRecord) -> type[BaseModel]:
    """The schema of ``POST /v1/detect``'s answer: every :class:`~medmoe.api.results.ResultRecord` field with
    its description, then ``overlay_png`` and ``timing_ms``."""
    hints = typing.get_type_hints(record)
    fields: dict[str, Any] = {f.name: (hints[f.name], Field(description=f.metadata["doc"]))
                              for f in dataclasses.fields(record)}
    fields["overlay_png"] = (str, Field(description="Base64 PNG: the anomaly map over the image."))
    fields["timing_ms"] = (Timing, Field(description="Where the request's time went."))
    return create_model("DetectResponse", __doc__="The answer of POST /v1/detect: one result record, its "
                                                  "overlay and timing.", **fields)


def create_app(detector: Detector, *, max_upload_mb: float = 20, fpr: float = DEFAULT_FPR) -> FastAPI:
    """A FastAPI app serving ``detector`` (already loaded; the app never reloads it).

    Args:
        detector: the model to serve.
        max_upload_mb: the largest accepted upload, in MiB.
        fpr: the false-positive rate of decisions when a request does not give one.
    """
    if not max_upload_mb > 0:
        raise ValueError(f"max_upload_mb must be positive, not {max_upload_mb}")
    if not 0 < fpr < 1:
        raise ConfigError(f"the default false-positive rate must be in (0, 1), not {fpr}; e.g. --fpr 0.05")
    default_fpr = fpr
    max_bytes = int(max_upload_mb * MIB)
    too_large = (f"the upload is larger than this server's limit of {max_upload_mb:g} MB; send a smaller "
                 "image (one 2-D slice or frame) or restart the server with a larger --max-upload-mb")
    batcher = Batcher(detector)
    index_html = files("medmoe.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    app = FastAPI(title="medmoe", version=__version__,
                  description="Universal unsupervised anomaly detection in medical images: upload an image "
                              "with a prompt or a task id, get its anomaly score, decision and heatmap. "
                              "Research software, not a medical device.")
    app.add_middleware(BodySizeLimit, max_bytes=max_bytes + FORM_OVERHEAD_BYTES, paths=("/v1/detect",),
                       message=too_large)

    @app.exception_handler(RequestValidationError)
    def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """A malformed form field: one sentence naming it, like every other error."""
        return JSONResponse(status_code=422, content={"detail": validation_sentence(exc)})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        """The web page."""
        return index_html

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """Liveness and the served model's facts."""
        spec = detector.spec
        return {
            "status": "ok",
            "version": __version__,
            "model": {
                "name": spec.name,
                "version": spec.version,
                "weights_sha256": spec.weights_sha256,
                "backend": detector.backend.name,
                "tasks": detector.tasks.ids,
                "resolution": spec.resolution,
                "channels": spec.channels,
                "uses_prompt": spec.uses_prompt,
                "text_encoder": spec.text_encoder,
                "trained_with_medmoe": spec.medmoe_version,
            },
            "max_upload_mb": max_upload_mb,
            "limits": {"max_upload_mb": max_upload_mb, "max_decoded_pixels": policy.MAX_PIXELS,
                       "min_side_px": policy.MIN_SIDE, "max_batch": batcher.max_batch,
                       "batch_wait_ms": 1000 * batcher.max_wait_s},
            "scored": {"images": batcher.images, "batches": batcher.batches},
        }

    @app.get("/v1/tasks")
    def tasks() -> list[dict[str, Any]]:
        """The tasks the model was trained on, in model order, with the threshold ``/v1/detect`` decides at
        by default (the server's false-positive rate ``fpr``)."""
        return [{"id": t.id, "organ": t.organ, "modality": t.modality, "prompt": t.prompt,
                 "threshold": finite_or_none(detector.spec.decision_threshold(t.id, default_fpr)),
                 "fpr": default_fpr} for t in detector.tasks]

    @app.post("/v1/detect", responses=_ERRORS, response_model=response_model())
    def detect(
        file: Annotated[list[UploadFile] | None, File(description=f"The image: {ACCEPTED_FORMATS}; one per "
                                                                   "request.")] = None,
        prompt: Annotated[str | None, Form(description="What the image shows, e.g. 'Brain MRI slice.'.")] = None,
        task: Annotated[str | None, Form(description="A task id from /v1/tasks, instead of a prompt.")] = None,
        strict: Annotated[bool, Form(description="A prompt matching no trained task, or naming an organ or "
                                                 "modality none has, is an error, not a warning.")] = False,
        fpr: Annotated[float | None, Form(gt=0, lt=1, description="The false-positive rate on normals the "
                                                                  "decision controls (default: the server's, "
                                                                  f"{DEFAULT_FPR} unless set).")] = None,
        frame: Annotated[str | None, Form(description="Frame of a multi-frame DICOM or page of a multi-page TIFF: "
                                                      "an index (0-based) or first/middle/last.")] = None,
        slice_index: Annotated[str | None, Form(description="Axial slice of a 3-D NIfTI volume: an index (0 = most "
                                                            "inferior) or first/middle/last.")] = None,
        window: Annotated[str | None, Form(description="DICOM/NIfTI intensity window: CENTER,WIDTH in the file's "
                                                       "units (e.g. 40,80 HU) or a preset (brain, bone, lung …).")]
        = None,
    ) -> dict[str, Any]:
        """Score one image: anomaly score, threshold, decision, matched task, experts and an overlay PNG."""
        started = time.perf_counter()
        choices = _read_choices(frame, slice_index, window)
        if not file:
            raise HTTPException(422, "no image uploaded: send it as the multipart form field 'file'")
        if len(file) > 1:
            raise HTTPException(422, f"{len(file)} files were sent in the field 'file'; a request scores one image: "
                                     "send one file per request")
        name = file[0].filename or "upload"
        data = file[0].file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, too_large)
        if not data:
            raise HTTPException(422, f"the uploaded file '{name}' is empty (0 bytes)")
        suffix = sniff_suffix(data)
        if suffix is None:
            raise HTTPException(415, f"'{name}' is not an image format medmoe reads; send {ACCEPTED_FORMATS}")
        with upload_as_file(data, suffix) as path:
            try:
                prepared = detector.prepare(path, prompt=prompt, task=task, strict=strict,
                                            fpr=default_fpr if fpr is None else fpr, **choices)
            except MedmoeError as exc:
                raise HTTPException(422, str(exc).replace(str(path), name)) from None
        waited = time.perf_counter()
        result = batcher.score(prepared)
        inferred = time.perf_counter()
        result = dataclasses.replace(result, source=name)
        overlay = render_result(result)
        done = time.perf_counter()
        return {
            **result.to_dict(),
            "overlay_png": base64.b64encode(overlay).decode("ascii"),
            "timing_ms": {"predict": _ms(inferred - waited), "overlay": _ms(done - inferred),
                          "total": _ms(done - started)},
        }

    return app


def _read_choices(frame: str | None, slice_index: str | None, window: str | None) -> dict[str, Any]:
    """The ``frame``, ``slice_index`` and ``window`` form fields as :meth:`Detector.prepare` arguments;
    a 422 naming the field for a bad value."""
    parsed: dict[str, Any] = {}
    for name, text in (("frame", frame), ("slice_index", slice_index)):
        try:
            parsed[name] = parse_choice(text)
        except ValueError as exc:
            raise HTTPException(422, f"{name}: {exc}") from None
        if parsed[name] == ALL:
            flag = "--frame" if name == "frame" else "--slice"
            raise HTTPException(422, f"{name}=all asks for every one as its own image, but a request scores one "
                                     f"image: send an index (or first/middle/last), or use 'medmoe detect {flag} all'")
    try:
        parsed["window"] = None if window is None else resolve_window(window)
    except ValueError as exc:
        raise HTTPException(422, f"window: {exc}") from None
    return parsed


def validation_sentence(exc: RequestValidationError) -> str:
    """FastAPI's list of validation problems as one sentence: ``fpr: Input should be less than 1; …``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query", "form"))
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _ms(seconds: float) -> float:
    """Seconds as milliseconds, rounded to 0.1 ms."""
    return round(seconds * 1000.0, 1)
