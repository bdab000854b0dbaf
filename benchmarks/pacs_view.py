#!/usr/bin/env python
"""What a PACS user sees of medmoe's results: screenshots of Orthanc's own web explorer after a round trip.

``python benchmarks/pacs_view.py --model RUN [--out benchmarks/results]`` starts Orthanc (Debian package
``orthanc``) and ``medmoe listen`` on free loopback ports, pushes pydicom's ``MR_small.dcm`` into Orthanc, has
Orthanc send it to the node (as a PACS user would: the node is one of its modalities), waits for the report
and map to come back into the study, and photographs with headless Chromium

- ``pacs-view-study.png``: the study in Orthanc Explorer, with the image's series and medmoe's two;
- ``pacs-view-report.png``: the report's content as Orthanc's REST API gives it (``simplified-tags``:
  the content tree, each item's concept and value).

Orthanc Explorer neither renders SR content nor float Parametric Maps as pictures; a radiology viewer
(OHIF, Weasis) would, and none installs from the registries here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], bool], seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("gave up waiting")
        time.sleep(0.2)


def screenshot(url: str, path: Path, height: int = 900) -> None:
    """Headless Chromium's picture of ``url``, 1280 px wide (scripts given 5 s to render)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("no Chromium: run .ci/setup-browser")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size=1280,{height}", "--virtual-time-budget=5000", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="run folder of the model the node serves")
    parser.add_argument("--task", default="brain_mri")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)

    import httpx
    from pydicom.data import get_testdata_file

    http, dicom, node = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "orthanc.json").write_text(json.dumps({
            "Name": "medmoe-demo", "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
            "HttpPort": http, "RemoteAccessAllowed": False, "DicomAet": "ORTHANC", "DicomPort": dicom,
            "DicomCheckModalityHost": True, "DicomAlwaysAllowStore": False, "DicomAlwaysAllowEcho": False,
            "DicomModalities": {"medmoe": {"AET": "MEDMOE", "Host": "127.0.0.1", "Port": node, "AllowStore": True}},
            "Plugins": []}))
        processes = [
            subprocess.Popen(["Orthanc", str(root / "orthanc.json")], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL),
            subprocess.Popen([sys.executable, "-c", "from medmoe.cli import main; main()", "listen", "--model",
                              str(args.model), "--port", str(node), "--task", args.task, "--send-to",
                              f"127.0.0.1:{dicom}:ORTHANC", "--work-dir", str(root / "node")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
        client = httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=60)
        try:
            def orthanc_up() -> bool:
                try:
                    return client.get("/system").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(orthanc_up)
            wait_for(lambda: client.post("/modalities/medmoe/echo", json={}).status_code == 200)
            uploaded = client.post("/instances", content=Path(get_testdata_file("MR_small.dcm")).read_bytes()).json()
            client.post("/modalities/medmoe/store", json={"Resources": [uploaded["ID"]], "Synchronous": True})
            study = uploaded["ParentStudy"]
            wait_for(lambda: len(client.get(f"/studies/{study}/instances").json()) == 3)
            report = next(i["ID"] for i in client.get(f"/studies/{study}/instances").json()
                          if client.get(f"/instances/{i['ID']}/metadata/SopClassUid").text == "1.2.840.10008.5.1.4.1.1.88.33")
            args.out.mkdir(parents=True, exist_ok=True)
            screenshot(f"http://127.0.0.1:{http}/app/explorer.html#study?uuid={study}", args.out / "pacs-view-study.png")
            screenshot(f"http://127.0.0.1:{http}/instances/{report}/simplified-tags",
                       args.out / "pacs-view-report.png", height=2200)
        finally:
            client.close()
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
    print(f"wrote {args.out / 'pacs-view-study.png'} and {args.out / 'pacs-view-report.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
