"""Result objects waiting to be sent to a DICOM destination, kept on disk until it has taken them.

:class:`Outbox` writes each object atomically into its folder, and a sender thread C-STOREs the folder's
files to the destination, oldest first, deleting each file once the destination answered Success.
A destination that is down or refuses the association leaves the files where they are, and an object it
refuses stays while the others go; the thread tries again after ``retry_seconds`` (and whenever new
objects arrive), and a node started on the same folder later sends what an earlier one could not.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom import Dataset
from pynetdicom import AE, build_context

from medmoe.api.dicom_results import write_dicom
from medmoe.errors import ConfigError

_log = logging.getLogger(__name__)
SUCCESS = 0x0000


@dataclass(frozen=True)
class Destination:
    """A DICOM Storage SCP: ``host``, ``port`` and AE title."""

    host: str
    port: int
    ae_title: str

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``HOST:PORT:AET`` (as ``--send-to`` takes it)."""
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2] or not parts[0]:
            raise ConfigError(f"--send-to must be HOST:PORT:AET, e.g. 127.0.0.1:4242:ORTHANC, not {text!r}")
        return cls(parts[0], int(parts[1]), parts[2])

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


class Outbox:
    """A folder of result objects and the thread that sends them (module docstring).

    Args:
        folder: where waiting objects are kept (created).
        destination: where they go.
        ae_title: this node's calling AE title.
        retry_seconds: the wait before trying a failed send again.
    """

    def __init__(self, folder: Path, destination: Destination, *, ae_title: str, retry_seconds: float = 30.0) -> None:
        self.folder = folder
        self.destination = destination
        self.retry_seconds = retry_seconds
        self.folder.mkdir(parents=True, exist_ok=True)
        self._ae = AE(ae_title=ae_title)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="medmoe-outbox", daemon=True)

    def put(self, dataset: Dataset) -> Path:
        """Keep ``dataset`` for sending (written atomically, named by its SOP Instance UID); its path."""
        path = self.folder / f"{dataset.SOPInstanceUID}.dcm"
        write_dicom(path, dataset)
        self._wake.set()
        return path

    def pending(self) -> list[Path]:
        """The objects not sent yet, oldest first."""
        return sorted(self.folder.glob("*.dcm"), key=lambda p: (p.stat().st_mtime_ns, p.name))

    def start(self) -> None:
        """Start sending (in a daemon thread)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the sender after the send in flight; what is left stays in the folder."""
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def send_pending(self) -> int:
        """Send what is waiting, in one association; returns how many objects the destination took."""
        waiting = self.pending()
        if not waiting:
            return 0
        datasets = [pydicom.dcmread(path) for path in waiting]
        contexts = list({(d.SOPClassUID, d.file_meta.TransferSyntaxUID) for d in datasets})
        self._ae.requested_contexts = [build_context(sop, syntax) for sop, syntax in contexts]
        association = self._ae.associate(self.destination.host, self.destination.port,
                                         ae_title=self.destination.ae_title)
        if not association.is_established:
            _log.warning("could not associate with %s; %d object(s) wait in %s", self.destination, len(waiting),
                         self.folder)
            return 0
        sent = 0
        try:
            for path, dataset in zip(waiting, datasets, strict=True):
                code = getattr(association.send_c_store(dataset), "Status", None)
                if code is None:  # the association is gone: the rest waits for the next try
                    _log.warning("lost the association with %s; %s and the rest kept", self.destination, path.name)
                    break
                if code != SUCCESS:  # this object refused: kept, and the others still go (one does not block all)
                    _log.warning("%s answered status 0x%04X to %s; kept for a later try", self.destination, code,
                                 path.name)
                    continue
                path.unlink()
                sent += 1
        finally:
            association.release()
        return sent

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                sent = self.send_pending()
                if sent:
                    _log.info("sent %d object(s) to %s", sent, self.destination)
            except Exception:  # a sender that dies loses nothing, but must not stop trying
                _log.exception("sending to %s failed; kept for a later try", self.destination)
            if self.pending():
                self._wake.wait(self.retry_seconds)
            else:
                self._wake.wait()
