"""Results as DICOM objects in the input's own study, for a PACS and the radiologist's viewer
(``medmoe detect --dicom-out``; built with ``highdicom``).

For each scored plane of a DICOM input:

- a **Comprehensive SR** (new series :data:`REPORT_SERIES`): the model and its version, the task and
  prompt, the score, threshold, p-value and the false-positive rate it is read at, the decision (also as
  the coded finding *Normal* / *Abnormal* where there is one), the scope and mismatch verdicts, the
  warnings, and a reference to the source image (and frame). DICOM and SNOMED CT codes where they exist
  (Algorithm Name/Version, Finding, Normal/Abnormal, Yes/No, Source); the rest under the private coding
  scheme :data:`SCHEME`. It is a plain content tree, not a TID 1500 measurement report;
- a **Parametric Map** (new series :data:`MAP_SERIES`): the anomaly map as float32 on the source's pixel
  grid, with a real-world value mapping (unitless anomaly) and a window from 0 to twice the decision
  threshold. A Parametric Map needs the source's frame of reference; a source without one (most
  radiographs and ultrasound files), and a frame of a multi-frame source (not made yet: highdicom places
  a map on every frame of its source, or on positions it derives from per-frame groups few files have),
  get instead
- a **Secondary Capture** (new series :data:`OVERLAY_SERIES`): the overlay ``medmoe detect`` draws (the
  map over the image, colour bar, score and decision), RGB, which any viewer shows — where the source
  states its orientation (Patient Orientation, or an Image Orientation (Patient) it follows from);
  otherwise the SR alone, and :attr:`DicomResults.no_map` says why.

Patient and study attributes are copied from the source by highdicom, so both objects land in the
source's study: a source without its study, series or instance UIDs gets none (:class:`MedmoeError`), and
patient and study attributes a file omits (Type 2: present, possibly empty) are given empty.
"""

from __future__ import annotations

import copy
import io
import math
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from highdicom.sr import (
    CodeContentItem,
    CodedConcept,
    ContainerContentItem,
    ContentItem,
    ContentSequence,
    ImageContentItem,
    NumContentItem,
    RelationshipTypeValues,
    TextContentItem,
)
from PIL import Image
from pydicom import Dataset
from pydicom.sr.codedict import codes

from medmoe import __version__
from medmoe.api.render import render_result
from medmoe.api.results import DetectionResult
from medmoe.atomic import atomic_write_bytes
from medmoe.errors import MedmoeError

SCHEME = "99MEDMOE"
"""Coding scheme designator of medmoe's own concepts (a private scheme: ``99`` prefix, PS3.16 §8)."""
MANUFACTURER = "medmoe"
UTF8 = "ISO_IR 192"
REPORT_SERIES = 9801
MAP_SERIES = 9802
OVERLAY_SERIES = 9803
CONTAINS = RelationshipTypeValues.CONTAINS
FINDING = CodedConcept("121071", "DCM", "Finding")
FINDINGS = {"anomalous": CodedConcept("263654008", "SCT", "Abnormal"),
            "normal": CodedConcept("17621005", "SCT", "Normal")}
IDENTITY = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
"""What a source must have for its results to join its study."""
PATIENT_AND_STUDY = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                     "StudyID", "AccessionNumber", "ReferringPhysicianName")
"""Type 2 attributes results copy from the source: present in a valid file, given empty where it omits them."""
YES, NO = CodedConcept("373066001", "SCT", "Yes"), CodedConcept("373067005", "SCT", "No")


def concept(value: str, meaning: str) -> CodedConcept:
    """One of medmoe's own concepts (:data:`SCHEME`)."""
    return CodedConcept(value, SCHEME, meaning)


REPORT = concept("REPORT", "Anomaly detection report")
TASK, PROMPT, DECISION = concept("TASK", "Task"), concept("PROMPT", "Prompt"), concept("DECISION", "Decision")
SCORE, THRESHOLD = concept("SCORE", "Anomaly score"), concept("THRESHOLD", "Decision threshold")
P_VALUE, FPR = concept("PVALUE", "p-value among normal calibration scans"), concept("FPR", "False-positive rate")
OUT_OF_SCOPE, MISMATCH = concept("OUTSCOPE", "Out of scope"), concept("MISMATCH", "Prompt mismatch")
SCOPE_DISTANCE, WARNING = concept("SCOPEDIST", "Scope distance"), concept("WARNING", "Warning")


@dataclass(frozen=True)
class DicomResults:
    """The DICOM objects of one result.

    Attributes:
        report: the Comprehensive SR.
        anomaly_map: the Parametric Map (``None``: the source's geometry does not allow one).
        overlay: the Secondary Capture of the overlay, where there is no map (``None``: there is a map, or the
            source states no orientation).
        no_map: why there is no map (empty when there is one).
    """

    report: Dataset
    anomaly_map: Dataset | None
    overlay: Dataset | None = None
    no_map: str = ""

    def objects(self) -> list[tuple[str, Dataset]]:
        """``(kind, dataset)`` of each object made: ``sr``, then ``map`` or ``overlay`` where there is one."""
        made = (("sr", self.report), ("map", self.anomaly_map), ("overlay", self.overlay))
        return [(kind, dataset) for kind, dataset in made if dataset is not None]

    def write(self, out_dir: Path, name: str) -> list[str]:
        """Write ``<name>_sr.dcm`` (and ``<name>_map.dcm`` or ``<name>_overlay.dcm``) into ``out_dir`` atomically;
        their file names."""
        for kind, dataset in self.objects():
            write_dicom(out_dir / f"{name}_{kind}.dcm", dataset)
        return [f"{name}_{kind}.dcm" for kind, _ in self.objects()]


def write_dicom(path: Path, dataset: Dataset) -> None:
    """Write ``dataset`` to ``path`` as a DICOM Part 10 file, atomically."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    atomic_write_bytes(path, buffer.getvalue())


def dicom_results(result: DetectionResult, source: Dataset, *, instance: int = 1) -> DicomResults:
    """The SR and Parametric Map of ``result``, scored on ``source`` (read without its pixels is enough;
    ``result.frame`` names the frame of a multi-frame source). ``instance``: their instance numbers.

    Raises:
        MedmoeError: the source lacks a UID of :data:`IDENTITY`, or has a value the report cannot copy.
    """
    source = _complete(source)
    frame = None if result.frame is None else result.frame + 1  # DICOM frame numbers count from 1
    try:
        report = hd.sr.ComprehensiveSR(
            evidence=[source], content=_content(result, source, frame), series_instance_uid=hd.UID(),
            series_number=REPORT_SERIES, sop_instance_uid=hd.UID(), instance_number=instance,
            manufacturer=MANUFACTURER, series_description="medmoe anomaly report")
    except (ValueError, TypeError) as exc:  # what highdicom raises on a value it cannot copy
        raise MedmoeError(f"no DICOM results: an attribute of the source does not conform to DICOM ({exc})") from exc
    report.SpecificCharacterSet = UTF8  # warnings and prompts are not ASCII ("2.3 × its typical distance")
    if "FrameOfReferenceUID" not in source:
        no_map = ("no parametric map: the source has no frame of reference (FrameOfReferenceUID), which a map "
                  "needs to lie on it")
    elif frame is not None:
        no_map = f"no parametric map: maps of one frame (here {frame}) of a multi-frame source are not made yet"
    else:
        try:
            return DicomResults(report, _parametric_map(result, source, instance))
        except (ValueError, TypeError, AttributeError, RuntimeError) as exc:  # what highdicom raises on geometry
            no_map = f"no parametric map for this source: {exc}"
    orientation = patient_orientation(source)
    if orientation is None:
        return DicomResults(report, None, no_map=f"{no_map}; no overlay either: the source states no orientation")
    return DicomResults(report, None, _overlay(result, source, orientation, instance), no_map=f"{no_map} (an overlay "
                        "instead)")


def _complete(source: Dataset) -> Dataset:
    """``source``, or a copy with the :data:`PATIENT_AND_STUDY` attributes it omits given empty."""
    if missing := [name for name in IDENTITY if name not in source]:
        raise MedmoeError(f"no DICOM results: the source has no {', '.join(missing)}, so they cannot join its study")
    if all(name in source for name in PATIENT_AND_STUDY):
        return source
    completed = copy.deepcopy(source)  # a shallow copy shares the source's elements
    for name in PATIENT_AND_STUDY:
        if name not in completed:
            setattr(completed, name, "")
    return completed


def _content(result: DetectionResult, source: Dataset, frame: int | None) -> ContainerContentItem:
    """The SR's content tree (module docstring)."""
    items: list[ContentItem] = [
        TextContentItem(codes.DCM.AlgorithmName, result.model or MANUFACTURER, relationship_type=CONTAINS),
        TextContentItem(codes.DCM.AlgorithmVersion, _version(result), relationship_type=CONTAINS),
        TextContentItem(TASK, result.task, relationship_type=CONTAINS),
        TextContentItem(PROMPT, result.prompt or "-", relationship_type=CONTAINS),
        TextContentItem(DECISION, result.decision, relationship_type=CONTAINS),
    ]
    if result.decision in FINDINGS:
        items.append(CodeContentItem(FINDING, FINDINGS[result.decision], relationship_type=CONTAINS))
    for name, value in ((SCORE, result.score), (THRESHOLD, result.threshold), (P_VALUE, result.p_value),
                        (FPR, result.fpr), (SCOPE_DISTANCE, result.scope_distance)):
        if math.isfinite(value):
            items.append(NumContentItem(name, float(value), codes.UCUM.NoUnits, relationship_type=CONTAINS))
    if math.isfinite(result.scope_distance):  # a model with a scope head
        items.append(CodeContentItem(OUT_OF_SCOPE, YES if result.out_of_scope else NO, relationship_type=CONTAINS))
    if math.isfinite(result.p_value):  # mismatch verdicts come with calibration
        items.append(CodeContentItem(MISMATCH, YES if result.prompt_mismatch else NO, relationship_type=CONTAINS))
    items += [TextContentItem(WARNING, text[:1024], relationship_type=CONTAINS) for text in result.warnings]
    items.append(ImageContentItem(codes.SCT.Source, source.SOPClassUID, source.SOPInstanceUID,
                                  referenced_frame_numbers=frame, relationship_type=CONTAINS))
    root = ContainerContentItem(REPORT)
    root.ContentSequence = ContentSequence(items)
    return root


def _parametric_map(result: DetectionResult, source: Dataset, instance: int) -> Dataset:
    """The anomaly map as a Parametric Map on ``source``'s grid (raises where highdicom cannot place it)."""
    amap = np.asarray(result.anomaly_map, dtype=np.float32)
    if amap.shape != (source.Rows, source.Columns):
        raise ValueError(f"the map is {amap.shape}, the source {source.Rows}×{source.Columns}")
    top = 2 * result.threshold if math.isfinite(result.threshold) and result.threshold > 0 else float(amap.max())
    low, high = float(amap.min()), float(amap.max())
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="ANOMALY", lut_explanation="medmoe anomaly map (unitless; the score is read from it)",
        unit=codes.UCUM.NoUnits, value_range=(low, high if high > low else low + 1.0), intercept=0.0, slope=1.0)
    return hd.pm.ParametricMap(
        source_images=[source], pixel_array=amap[None], series_instance_uid=hd.UID(), series_number=MAP_SERIES,
        sop_instance_uid=hd.UID(), instance_number=instance, manufacturer=MANUFACTURER,
        manufacturer_model_name=result.model or MANUFACTURER, software_versions=_version(result),
        device_serial_number=result.model_sha256 or "-", contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping], content_label="ANOMALYMAP",
        content_description="medmoe anomaly map", series_description="medmoe anomaly map",
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=top / 2, window_width=max(top, 1e-6))])


def patient_orientation(source: Dataset) -> tuple[str, str] | None:
    """The source's Patient Orientation (row and column directions, e.g. ``("L", "F")``), or the one its Image
    Orientation (Patient) gives by each direction's dominant axis; ``None`` when it states neither."""
    stated = source.get("PatientOrientation")
    if stated is not None and len(stated) == 2 and all(stated):
        return str(stated[0]), str(stated[1])
    cosines = source.get("ImageOrientationPatient")
    if cosines is None or len(cosines) != 6:
        return None
    letters = (("L", "R"), ("P", "A"), ("H", "F"))  # the patient's +x, +y, +z and their opposites
    directions = []
    for vector in (cosines[:3], cosines[3:]):
        axis = int(np.argmax(np.abs(vector)))
        directions.append(letters[axis][0 if vector[axis] > 0 else 1])
    return directions[0], directions[1]


def _overlay(result: DetectionResult, source: Dataset, orientation: tuple[str, str], instance: int) -> Dataset:
    """The overlay ``medmoe detect`` draws, as an RGB Secondary Capture in ``source``'s study."""
    picture = np.asarray(Image.open(io.BytesIO(render_result(result))).convert("RGB"))
    return hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=picture, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", patient_orientation=orientation, series_instance_uid=hd.UID(),
        series_number=OVERLAY_SERIES, sop_instance_uid=hd.UID(), instance_number=instance,
        manufacturer=MANUFACTURER, series_description="medmoe anomaly overlay")


def _version(result: DetectionResult) -> str:
    """``medmoe 0.2.0, weights 0123456789ab``."""
    return f"medmoe {__version__}" + (f", weights {result.model_sha256}" if result.model_sha256 else "")
