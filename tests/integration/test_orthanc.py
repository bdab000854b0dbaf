"""The round trip through a real PACS: a study pushed into Orthanc, sent by Orthanc to ``medmoe listen``, and
the report and map found in Orthanc's copy of the study (its REST API). Orthanc runs on loopback ports of
its own, accepts DICOM only from the node's AE title at 127.0.0.1, and is stopped after the test."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from test_dicom_node import MR_SMALL, free_port, wait_for

from medmoe import Detector
from medmoe.node.outbox import Destination, Outbox
from medmoe.node.scp import DicomNode, NodeSettings

pytestmark = pytest.mark.slow
ORTHANC = shutil.which("Orthanc")


def orthanc_config(root: Path, http_port: int, dicom_port: int, node_port: int) -> Path:
    """The configuration the test runs Orthanc with (quoted in the README's "Connecting to a PACS")."""
    config = {
        "Name": "medmoe-test", "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
        "HttpPort": http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomAet": "ORTHANC", "DicomPort": dicom_port, "DicomCheckModalityHost": True,
        "DicomAlwaysAllowStore": False, "DicomAlwaysAllowEcho": False,
        "DicomModalities": {"medmoe": {"AET": "MEDMOE", "Host": "127.0.0.1", "Port": node_port,
                                       "AllowStore": True, "AllowEcho": True}},
        "Plugins": [],
    }
    path = root / "orthanc.json"
    path.write_text(json.dumps(config, indent=1))
    return path


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[tuple[httpx.Client, int, int]]:
    assert ORTHANC, "Orthanc is not installed: run .ci/setup-dicom-tools (make test does)"
    http_port, dicom_port, node_port = free_port(), free_port(), free_port()
    log = (tmp_path / "orthanc.log").open("w")
    process = subprocess.Popen([ORTHANC, str(orthanc_config(tmp_path, http_port, dicom_port, node_port))],
                               stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)
    try:
        def up() -> bool:
            try:
                return client.get("/system").status_code == 200
            except httpx.TransportError:
                return False

        assert wait_for(up), (tmp_path / "orthanc.log").read_text()
        yield client, dicom_port, node_port
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_a_study_sent_from_orthanc_comes_back_with_its_report_and_map(orthanc: tuple[httpx.Client, int, int],
                                                                     tiny_run: Path, tmp_path: Path) -> None:
    client, dicom_port, node_port = orthanc
    outbox = Outbox(tmp_path / "node" / "outbox", Destination("127.0.0.1", dicom_port, "ORTHANC"),
                    ae_title="MEDMOE", retry_seconds=1.0)
    node = DicomNode(Detector.load(tiny_run), outbox, tmp_path / "node", NodeSettings(task="brain_mri"))
    node.start("127.0.0.1", node_port)
    try:
        uploaded = client.post("/instances", content=Path(MR_SMALL).read_bytes()).json()
        study = uploaded["ParentStudy"]
        answer = client.post("/modalities/medmoe/store", json={"Resources": [uploaded["ID"]], "Synchronous": True})
        assert answer.status_code == 200, answer.text
        assert wait_for(lambda: len(client.get(f"/studies/{study}/instances").json()) == 3)
    finally:
        node.stop()
    classes = {}
    for instance in client.get(f"/studies/{study}/instances").json():
        data = client.get(f"/instances/{instance['ID']}/file").content
        dataset = pydicom.dcmread(io.BytesIO(data))
        classes[dataset.SOPClassUID.name] = dataset
    assert set(classes) == {"MR Image Storage", "Comprehensive SR Storage", "Parametric Map Storage"}
    report = classes["Comprehensive SR Storage"]
    texts = {item.ConceptNameCodeSequence[0].CodeMeaning: item.get("TextValue") for item in report.ContentSequence}
    assert texts["Task"] == "brain_mri" and texts["Decision"] in ("anomalous", "normal")
    assert report.StudyInstanceUID == pydicom.dcmread(MR_SMALL).StudyInstanceUID
