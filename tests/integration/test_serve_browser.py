"""End to end: ``medmoe serve`` in its own process, its web page driven by headless Chromium.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: NUL-separated
JSON, the browser reads fd 3 and writes fd 4), so the test needs the ``chromium`` binary and nothing
else: no WebDriver, no driver/browser version matching, no Python package. ``.ci/setup-browser``
installs Chromium in CI. Everything stays on 127.0.0.1, every wait is bounded, and the server and
the browser are stopped at the end.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from serve_fixtures import brain_phantom, tiny_model

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
VIEWPORT = (1280, 900)


class DevTools:
    """A headless Chromium and one page of it, controlled over the DevTools protocol on a pipe.

    Args:
        binary: the browser executable.
        profile: an empty folder for the browser profile.
    """

    def __init__(self, binary: str, profile: Path) -> None:
        browser_reads, self._write = os.pipe()
        self._read, browser_writes = os.pipe()

        def at_fds_3_and_4() -> None:  # runs in the child: the pipe ends become its fds 3 and 4
            reads, writes = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (browser_reads, browser_writes))
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=at_fds_3_and_4, close_fds=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(browser_reads)
        os.close(browser_writes)
        self._buffer = b""
        self._next_id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.page("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0], height=VIEWPORT[1],
                  deviceScaleFactor=1, mobile=False)

    def call(self, method: str, *, session: str | None = None, timeout: float = 20.0, **params: Any) -> dict:
        """Send one command and return its result (events that arrive meanwhile are dropped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._read], [], [], left)[0]:
                    raise TimeoutError(f"no answer to {method} within {timeout} s")
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"the browser closed the pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def page(self, method: str, **params: Any) -> dict:
        """A command to the page's session."""
        return self.call(method, session=self.session, **params)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> None:
        """Poll until ``expression`` is truthy (a page still loading counts as false), at most ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"(() => {{ try {{ return !!({expression}); }} catch (e) {{ return false; }} }})()"):
            if time.monotonic() > deadline:
                shown_error = self.evaluate("document.getElementById('error')?.textContent")
                raise AssertionError(f"waited {timeout} s for {expression}; page error box: {shown_error!r}")
            time.sleep(0.1)

    def set_file(self, element_id: str, path: Path) -> None:
        """Choose ``path`` in the file input ``#element_id``, as a user would in the file dialog."""
        handle = self.page("Runtime.evaluate", expression=f"document.getElementById({element_id!r})")
        self.page("DOM.setFileInputFiles", files=[str(path)], objectId=handle["result"]["objectId"])

    def type_into(self, element_id: str, text: str) -> None:
        """Focus ``#element_id`` and type ``text``."""
        self.evaluate(f"document.getElementById({element_id!r}).focus()")
        self.page("Input.insertText", text=text)

    def click(self, element_id: str) -> None:
        """A left mouse click at the centre of ``#element_id``."""
        box = self.evaluate(f"JSON.stringify(document.getElementById({element_id!r}).getBoundingClientRect())")
        rect = json.loads(box)
        x, y = rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self) -> bytes:
        """A PNG of the whole page."""
        return base64.b64decode(self.page("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])

    def close(self) -> None:
        """Close the browser (killed if it does not exit within 10 s) and the pipe."""
        try:
            self.call("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self._read)
        os.close(self._write)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"no headless browser found ({', '.join(BROWSERS)}); install Chromium with .ci/setup-browser "
                "or deselect these tests with -m 'not browser'")


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def server(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``medmoe serve`` on a free loopback port, via the real command line; yields its base URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [sys.executable, "-c", "from medmoe.cli import main; main()", "serve", "--model",
               str(model_root / "run"), "--host", "127.0.0.1", "--port", str(port), "--max-upload-mb", "1"]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"medmoe serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"medmoe serve did not answer within 120 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    devtools = DevTools(_browser(), tmp_path / "profile")
    try:
        yield devtools
    finally:
        devtools.close()


def test_upload_prompt_and_see_the_result(server: str, browser: DevTools, model_root: Path, tmp_path: Path) -> None:
    image = brain_phantom(model_root)
    corrupt = tmp_path / "cut.png"
    corrupt.write_bytes(image.read_bytes()[:200])
    expected = httpx.post(f"{server}/v1/detect", files={"file": (image.name, image.read_bytes())},
                          data={"prompt": "axial brain MRI"}, timeout=60).json()

    browser.page("Page.navigate", url=server + "/")
    browser.wait_for("document.getElementById('task').options.length === 6 && "
                     "document.getElementById('model-info').textContent.includes('5 tasks')")
    browser.type_into("prompt", "axial brain MRI")

    # A corrupt file: the error is shown, and the page and the server carry on.
    browser.set_file("file", corrupt)
    browser.click("submit")
    browser.wait_for("!document.getElementById('error').hidden")
    assert "cannot read image 'cut.png'" in browser.evaluate("document.getElementById('error').textContent")
    assert browser.evaluate("document.getElementById('result').hidden")

    browser.set_file("file", image)
    browser.click("submit")
    browser.wait_for("!document.getElementById('result').hidden && document.getElementById('overlay').complete"
                     " && !document.getElementById('submit').disabled")
    shown = browser.evaluate("""(() => {
        const text = (id) => document.getElementById(id).textContent;
        const decision = document.getElementById('decision');
        return {decision: text('decision-text'), verdictClass: decision.className,
                colour: getComputedStyle(decision).color, score: text('score'), threshold: text('threshold'),
                task: text('task-out'), similarity: text('similarity'), error: document.getElementById('error').hidden,
                overlayWidth: document.getElementById('overlay').naturalWidth,
                experts: document.querySelectorAll('#experts .expert').length, pValue: text('p-value'),
                alertHidden: document.getElementById('scope-alert').hidden, resembles: text('resembles'),
                fields: [...document.querySelectorAll('#fields tr')].map((row) => row.dataset.field),
                firstExpert: document.querySelector('#experts .expert span').textContent};
    })()""")
    assert shown["pValue"].startswith("p = ") and "normal 'brain_mri'" in shown["pValue"]
    assert shown["alertHidden"] is True and shown["resembles"] == "brain_mri"
    assert shown["decision"] == expected["decision"] and shown["decision"] in ("anomalous", "normal")
    assert shown["verdictClass"] == f"verdict {expected['decision']}"
    assert shown["colour"] == {"anomalous": "rgb(192, 57, 43)", "normal": "rgb(35, 128, 61)"}[expected["decision"]]
    assert float(shown["score"]) == pytest.approx(expected["score"], rel=1e-3)
    assert float(shown["threshold"]) == pytest.approx(expected["threshold"], rel=1e-3)
    assert shown["task"] == "brain_mri" and float(shown["similarity"]) == pytest.approx(
        expected["prompt_similarity"], abs=0.006)
    assert shown["error"] is True  # the earlier error was cleared
    assert shown["overlayWidth"] >= 300
    assert shown["experts"] == len(expected["expert_weights"]) and shown["firstExpert"] == "E1"  # numbered from 1
    # every field of the answer is on the page, by its name (one declaration: medmoe.api.results.ResultRecord)
    assert shown["fields"] == [name for name in expected if name != "overlay_png"]
    screenshot = tmp_path / "serve.png"
    screenshot.write_bytes(browser.screenshot())
    assert Image.open(screenshot).width == VIEWPORT[0]

    # A task picked from the list (filled from /v1/tasks) replaces the prompt.
    browser.evaluate("(() => { const s = document.getElementById('task'); s.value = 'head_ct';"
                     " s.dispatchEvent(new Event('change')); })()")
    assert browser.evaluate("document.getElementById('prompt').disabled")
    browser.click("submit")
    browser.wait_for("document.getElementById('task-out').textContent === 'head_ct'")
    assert browser.evaluate("document.getElementById('prompt-out').textContent") == "Head CT slice."
    # a brain MRI asked about as a head CT: the mismatch is a visible warning, naming what it looks like
    alert = browser.evaluate("(() => { const a = document.getElementById('scope-alert');"
                             " return {hidden: a.hidden, text: a.textContent}; })()")
    assert alert["hidden"] is False and "looks like brain_mri, not head_ct" in alert["text"]

    # A failing request after a result: the earlier result is not left on screen next to the error.
    browser.set_file("file", corrupt)
    browser.click("submit")
    browser.wait_for("!document.getElementById('error').hidden")
    assert browser.evaluate("document.getElementById('result').hidden")

    # A multi-page TIFF: refused without a frame, scored with one typed in the options.
    stack = tmp_path / "stack.tif"
    pages = [Image.open(image), Image.open(image).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    pages[0].save(stack, save_all=True, append_images=pages[1:])
    browser.set_file("file", stack)
    browser.click("submit")
    browser.wait_for("!document.getElementById('error').hidden")
    assert "2 pages" in browser.evaluate("document.getElementById('error').textContent")
    browser.evaluate("document.getElementById('options').open = true")
    browser.type_into("frame", "last")
    browser.click("submit")
    browser.wait_for("!document.getElementById('result').hidden && !document.getElementById('submit').disabled")
    second = httpx.post(f"{server}/v1/detect", files={"file": (stack.name, stack.read_bytes())},
                        data={"task": "head_ct", "frame": "1"}, timeout=60).json()
    assert float(browser.evaluate("document.getElementById('score').textContent")) == pytest.approx(
        second["score"], rel=1e-3)
