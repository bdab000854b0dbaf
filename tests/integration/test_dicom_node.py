"""``medmoe listen``: images in over DICOM networking, result objects out to a destination (pynetdicom only, on
loopback): success, a destination that is down (nothing lost, sent when it is back), input the node cannot score."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pynetdicom import AE, AllStoragePresentationContexts, build_context, evt

from medmoe import Detector
from medmoe.node.outbox import Destination, Outbox
from medmoe.node.scp import CANNOT_UNDERSTAND, DicomNode, NodeSettings

MR_SMALL = get_testdata_file("MR_small.dcm", download=False)
CINE = get_testdata_file("emri_small.dcm", download=False)  # 10 frames
REPORT = get_testdata_file("test-SR.dcm", download=False)  # a structured report: no pixels to score
LOSSY = get_testdata_file("JPEG-lossy.dcm", download=False)  # JPEG extended 12-bit: no installed decoder reads it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Archive:
    """A destination Storage SCP that keeps what it receives."""

    def __init__(self, port: int, refuse: str = "") -> None:
        self.port, self.received, self.server, self.refuse = port, [], None, refuse  # refuse: a SOP class name
        self.ae = AE(ae_title="ARCHIVE")
        self.ae.supported_contexts = AllStoragePresentationContexts

    def start(self) -> None:
        def keep(event: evt.Event) -> int:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
            if dataset.SOPClassUID.name == self.refuse:
                return 0xA700  # Refused: out of resources
            self.received.append(dataset)
            return 0x0000

        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, keep)])

    def stop(self) -> None:
        self.server.shutdown()


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def send(path: str, port: int) -> Dataset:
    """C-STORE ``path`` to the node; the status dataset."""
    dataset = pydicom.dcmread(path)
    ae = AE(ae_title="MODALITY")
    ae.requested_contexts = [build_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)]
    association = ae.associate("127.0.0.1", port, ae_title="MEDMOE")
    assert association.is_established
    try:
        return association.send_c_store(dataset)
    finally:
        association.release()


@pytest.fixture
def node(tiny_run: Path, tmp_path: Path) -> Iterator[tuple[DicomNode, int, Archive]]:
    archive = Archive(free_port())
    outbox = Outbox(tmp_path / "outbox", Destination("127.0.0.1", archive.port, "ARCHIVE"), ae_title="MEDMOE",
                    retry_seconds=1.0)
    node = DicomNode(Detector.load(tiny_run), outbox, tmp_path, NodeSettings(task="brain_mri"))
    port = free_port()
    node.start("127.0.0.1", port)
    try:
        yield node, port, archive
    finally:
        node.stop()
        if archive.server is not None:
            archive.stop()


def test_an_image_received_comes_back_as_a_report_and_a_map_in_its_study(node: tuple[DicomNode, int, Archive]) -> None:
    scp, port, archive = node
    archive.start()
    assert send(MR_SMALL, port).Status == 0x0000
    assert wait_for(lambda: len(archive.received) == 2)
    study = pydicom.dcmread(MR_SMALL).StudyInstanceUID
    assert sorted(d.SOPClassUID.name for d in archive.received) == ["Comprehensive SR Storage",
                                                                     "Parametric Map Storage"]
    assert all(d.StudyInstanceUID == study for d in archive.received)
    assert not scp.outbox.pending() and not list(scp.inbox.iterdir())


def test_a_radiograph_comes_back_with_its_report_and_overlay(node: tuple[DicomNode, int, Archive]) -> None:
    _, port, archive = node
    archive.start()
    assert send(get_testdata_file("RG1_UNCR.dcm", download=False), port).Status == 0x0000  # no frame of reference
    assert wait_for(lambda: len(archive.received) == 2)
    assert sorted(d.SOPClassUID.name for d in archive.received) == ["Comprehensive SR Storage",
                                                                     "Secondary Capture Image Storage"]


def test_results_wait_on_disk_while_the_destination_is_down_and_go_when_it_is_back(
        node: tuple[DicomNode, int, Archive]) -> None:
    scp, port, archive = node
    assert send(CINE, port).Status == 0x0000  # 10 frames, each a report (no per-frame positions: no maps)
    assert wait_for(lambda: len(scp.outbox.pending()) == 10)
    time.sleep(1.5)  # a retry against the closed port has happened
    assert len(scp.outbox.pending()) == 10 and not archive.received
    archive.start()
    assert wait_for(lambda: len(archive.received) == 10)
    frames = sorted(int(item.ReferencedSOPSequence[0].ReferencedFrameNumber)
                    for report in archive.received for item in report.ContentSequence if item.ValueType == "IMAGE")
    assert frames == list(range(1, 11)) and not scp.outbox.pending()


def test_what_the_node_cannot_score_is_answered_cannot_understand_and_it_keeps_serving(
        node: tuple[DicomNode, int, Archive], caplog: pytest.LogCaptureFixture) -> None:
    _, port, archive = node
    archive.start()
    for path, reason in ((REPORT, "pixel"), (LOSSY, "decode")):
        status = send(path, port)
        assert status.Status == CANNOT_UNDERSTAND and reason in status.ErrorComment, (path, status.ErrorComment)
    assert sum("refused" in record.message for record in caplog.records) == 2
    assert send(MR_SMALL, port).Status == 0x0000  # still serving
    assert wait_for(lambda: len(archive.received) == 2)


def test_a_destination_is_host_port_and_ae_title() -> None:
    assert Destination.parse("pacs.local:4242:ORTHANC") == Destination("pacs.local", 4242, "ORTHANC")
    with pytest.raises(Exception, match="HOST:PORT:AET"):
        Destination.parse("pacs.local:4242")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_medmoe_listen_serves_until_interrupted(sig: signal.Signals, tiny_run: Path, tmp_path: Path) -> None:
    archive, port = Archive(free_port()), free_port()
    archive.start()
    command = [sys.executable, "-c", "from medmoe.cli import main; main()", "listen", "--model", str(tiny_run),
               "--send-to", f"127.0.0.1:{archive.port}:ARCHIVE", "--port", str(port), "--task", "brain_mri",
               "--work-dir", str(tmp_path / "node")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: listening(port), seconds=120), process.stdout.read() if process.poll() else ""
        assert send(MR_SMALL, port).Status == 0x0000
        assert wait_for(lambda: len(archive.received) == 2)
    finally:
        process.send_signal(sig)
        output, _ = process.communicate(timeout=60)
        archive.stop()
    assert process.returncode == 0, output
    assert "listening on" in output and "scored" in output


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_without_a_task_an_image_whose_tags_name_no_body_part_is_answered_cannot_understand(
        tiny_run: Path, tmp_path: Path) -> None:
    archive = Archive(free_port())
    outbox = Outbox(tmp_path / "outbox", Destination("127.0.0.1", archive.port, "ARCHIVE"), ae_title="MEDMOE")
    node, port = DicomNode(Detector.load(tiny_run), outbox, tmp_path, NodeSettings()), free_port()
    node.start("127.0.0.1", port)
    try:
        status = send(get_testdata_file("CT_small.dcm", download=False), port)  # CT, no BodyPartExamined
    finally:
        node.stop()
    assert status.Status == CANNOT_UNDERSTAND and "task" in status.ErrorComment.lower(), status.ErrorComment
    assert not outbox.pending()


def test_an_object_the_destination_refuses_stays_in_the_outbox_and_does_not_hold_back_the_others(
        tiny_run: Path, tmp_path: Path) -> None:
    archive = Archive(free_port(), refuse="Comprehensive SR Storage")
    archive.start()
    outbox = Outbox(tmp_path / "outbox", Destination("127.0.0.1", archive.port, "ARCHIVE"), ae_title="MEDMOE",
                    retry_seconds=60.0)
    node, port = DicomNode(Detector.load(tiny_run), outbox, tmp_path, NodeSettings(task="brain_mri")), free_port()
    node.start("127.0.0.1", port)
    try:
        assert send(MR_SMALL, port).Status == 0x0000
        assert wait_for(lambda: len(archive.received) == 1)  # the map, queued after the refused report
    finally:
        node.stop()
        archive.stop()
    assert archive.received[0].SOPClassUID.name == "Parametric Map Storage"
    kept = outbox.pending()
    assert len(kept) == 1 and pydicom.dcmread(kept[0]).SOPClassUID.name == "Comprehensive SR Storage"
