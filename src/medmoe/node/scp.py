"""The Storage SCP of ``medmoe listen``: images in over DICOM, result objects out to a destination.

Each C-STORE request is handled in the association's thread:

1. the dataset is written (atomically) into the work folder's ``inbox/``, named by its SOP Instance UID;
2. every frame of it is scored (:meth:`~medmoe.api.detector.Detector.predict_batch`, the task from the
   node's prompt or task, else from the DICOM tags, refused when they suggest none — as ``medmoe detect``
   does), and each result's SR and Parametric Map or overlay (:mod:`medmoe.api.dicom_results`) go into the
   :class:`~medmoe.node.outbox.Outbox`, which sends them on;
3. the request is answered *Success* (``0x0000``) once the results are queued, or *Cannot understand*
   (``0xC000``) with the reason in the Error Comment when nothing could be scored (not an image, a
   compressed syntax we cannot decode, no task for it); either way one log line, and the node keeps
   serving. The inbox file is removed when it has been handled.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import Dataset
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    VerificationPresentationContexts,
    build_context,
    evt,
)

from medmoe.api.dicom_results import dicom_results, write_dicom
from medmoe.api.results import DetectionResult
from medmoe.errors import ImageReadError, MedmoeError
from medmoe.io import planes
from medmoe.io.dicom import read_dicom_header
from medmoe.node.outbox import SUCCESS, Outbox
from medmoe.trust import DEFAULT_FPR

if TYPE_CHECKING:
    from medmoe.api.detector import Detector

_log = logging.getLogger(__name__)
CANNOT_UNDERSTAND = 0xC000
"""C-STORE failure status *Cannot understand* (PS3.4 Annex B.2.3)."""


@dataclass(frozen=True)
class NodeSettings:
    """What the node asks of every image.

    Attributes:
        ae_title: the node's AE title.
        prompt, task: the images' prompt or task (neither: from each file's DICOM tags).
        fpr: the false-positive rate of decisions.
    """

    ae_title: str = "MEDMOE"
    prompt: str | None = None
    task: str | None = None
    fpr: float = DEFAULT_FPR


class DicomNode:
    """A Storage SCP scoring what it receives (module docstring).

    Args:
        detector: the model.
        outbox: where result objects go.
        work_dir: holds ``inbox/`` (received datasets while they are handled).
        settings: AE title, prompt or task, false-positive rate.
    """

    def __init__(self, detector: Detector, outbox: Outbox, work_dir: Path, settings: NodeSettings) -> None:
        self.detector = detector
        self.outbox = outbox
        self.settings = settings
        self.inbox = work_dir / "inbox"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self._ae = AE(ae_title=settings.ae_title)
        # every storage SOP class in every transfer syntax: a PACS may offer only compressed ones, and what
        # medmoe cannot decode is answered per dataset (Cannot understand), not refused for the association
        self._ae.supported_contexts = [*(build_context(c.abstract_syntax, ALL_TRANSFER_SYNTAXES)
                                         for c in AllStoragePresentationContexts if c.abstract_syntax),
                                       *VerificationPresentationContexts]
        self._scoring = threading.Lock()  # one image through the network at a time
        self._server: Any = None

    def start(self, host: str, port: int, *, block: bool = False) -> None:
        """Listen on ``host:port`` (and start the outbox's sender); ``block``: until interrupted."""
        self.outbox.start()
        self._server = self._ae.start_server((host, port), block=block,
                                             evt_handlers=[(evt.EVT_C_STORE, self._on_store)])

    def stop(self) -> None:
        """Stop listening and sending (objects not sent stay in the outbox folder)."""
        if self._server is not None:
            self._server.shutdown()
        self.outbox.stop()

    def _on_store(self, event: Any) -> int | Dataset:
        """Handle one C-STORE request (module docstring)."""
        dataset: Dataset = event.dataset
        dataset.file_meta = event.file_meta
        uid = str(dataset.get("SOPInstanceUID", "unknown"))
        path = self.inbox / f"{uid}.dcm"
        try:
            write_dicom(path, dataset)
            queued, problems = self.handle(path)
        except MedmoeError as exc:
            queued, problems = 0, [_reason(exc)]
        except Exception as exc:  # a bug; the node keeps serving whatever one dataset does
            _log.exception("scoring %s failed", uid)
            queued, problems = 0, [f"{type(exc).__name__}: {exc}"]
        finally:
            path.unlink(missing_ok=True)
        calling = event.assoc.requestor.ae_title
        if not queued:
            reason = "; ".join(problems) or "nothing to score"
            _log.warning("refused %s from %s: %s", uid, calling, reason)
            answer = Dataset()
            answer.Status = CANNOT_UNDERSTAND
            answer.ErrorComment = reason[:64]  # LO: 64 characters
            return answer
        _log.info("scored %s from %s: %d object(s) queued for %s%s", uid, calling, queued, self.outbox.destination,
                  f" ({'; '.join(problems)})" if problems else "")
        return SUCCESS

    def handle(self, path: Path) -> tuple[int, list[str]]:
        """Score every frame of the DICOM file ``path`` and queue each result's objects; returns how many
        objects were queued and what went wrong (one text per frame that could not be scored)."""
        source = read_dicom_header(path)
        with self._scoring:
            outcomes = self.detector.predict_batch(
                planes(path, frame="all"), self.settings.prompt, self.settings.task, fpr=self.settings.fpr,
                return_errors=True)
        queued, problems = 0, []
        for instance, outcome in enumerate(outcomes, start=1):
            try:
                if not isinstance(outcome, DetectionResult):
                    raise outcome
                made = dicom_results(outcome, source, instance=instance)
            except MedmoeError as exc:
                problems.append(_reason(exc))
                continue
            for _, obj in made.objects():
                self.outbox.put(obj)
                queued += 1
        return queued, problems


def _reason(exc: MedmoeError) -> str:
    """What went wrong, without the inbox file's name (the caller knows what it sent)."""
    return exc.reason if isinstance(exc, ImageReadError) else str(exc)

