"""The HTML report in a real browser: headless Chromium driven over the DevTools protocol (a pipe).

Checks that the page renders without console errors, embeds and decodes every image, shows the
summary and gates, runs no script, and that a class name made of HTML shows as text. Skipped only
when Chromium is absent and ROBUST_REQUIRE_CHROMIUM is not set (CI sets it).
"""
from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageStat

EVIL = "<img src=x onerror=alert(1)>"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("ROBUST_REQUIRE_CHROMIUM"):
        pytest.fail("ROBUST_REQUIRE_CHROMIUM is set but no chromium executable is on PATH (apt-get install chromium)")
    pytest.skip("chromium is not installed (Debian: apt-get install chromium); set ROBUST_REQUIRE_CHROMIUM to make this a failure")
    return None


class DevTools:
    """A minimal DevTools-protocol client over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out; NUL-separated JSON)."""

    def __init__(self, browser: str, profile: str, width: int = 1200, height: int = 1600):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-extensions", "--remote-debugging-pipe",
                 f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        command = " ".join([browser, *flags]) + f" 3<&{to_browser_r} 4>&{from_browser_w}"
        self.process = subprocess.Popen(["bash", "-c", "exec " + command], pass_fds=(to_browser_r, from_browser_w),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from chromium")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise ConnectionError("chromium closed the DevTools pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        self._next_id += 1
        request: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            request["sessionId"] = session
        os.write(self._to_browser, json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_message(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_message(deadline)
            self.events.append(message)
            if message.get("method") == method:
                return message

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError, ConnectionError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


PAGE_FACTS = """(() => {
  const imgs = Array.from(document.images);
  return {
    title: document.title,
    images: imgs.length,
    undecoded: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    external: imgs.filter(i => !i.src.startsWith('data:image/png;base64,')).length,
    scripts: document.scripts.length,
    summary: !!document.querySelector('#summary h2') && document.querySelector('#summary h2').textContent,
    gates: Array.from(document.querySelectorAll('#summary table')[1].querySelectorAll('tr')).length - 1,
    text: document.body.innerText,
    height: document.body.scrollHeight,
  };
})()"""


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from robust.audit import AuditConfig, run_audit
    from robust.data import ImageSet

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(24, 3, 16, 16, generator=gen)
    labels = torch.arange(24) % 3
    data = ImageSet(images, labels, ["cat", EVIL, "dog"], name="evil-names")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 3))
    out = tmp_path_factory.mktemp("browser-report")
    run_audit(model, data, AuditConfig(["clean", "transforms:brightness,sweep_steps=3"], gates=["clean.acc>=0", "clean.acc>=2"],
                                       out=out, progress=False))
    return out


def test_report_renders_in_chromium_with_images_summary_and_no_errors(report_dir: Path) -> None:
    browser = find_browser()
    with tempfile.TemporaryDirectory() as profile:
        tools = DevTools(browser, profile)
        try:
            target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
                tools.send(domain, session=session)
            tools.send("Page.navigate", {"url": (report_dir / "index.html").resolve().as_uri()}, session=session)
            tools.wait_for("Page.loadEventFired")
            facts = tools.send("Runtime.evaluate", {"expression": PAGE_FACTS, "returnByValue": True}, session=session)["result"]["value"]
            shot = tools.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
            problems = [
                e for e in tools.events
                if e.get("method") == "Runtime.exceptionThrown"
                or (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") in ("error", "assert"))
                or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")
            ]
        finally:
            tools.close()

    assert problems == []
    assert facts["title"].startswith("Robustness audit")
    assert facts["summary"] == "Summary" and facts["gates"] == 2
    assert facts["images"] >= 6 and facts["undecoded"] == [] and facts["external"] == 0
    assert facts["scripts"] == 0
    # The HTML in the class name is shown as text, not parsed into an element.
    assert EVIL in facts["text"] and "FAIL" in facts["text"] and "clean.acc>=2" in facts["text"]

    with Image.open(io.BytesIO(base64.b64decode(shot))) as image:
        rgb = image.convert("RGB")
        assert rgb.size[0] >= 800
        colours = len(rgb.getcolors(maxcolors=1 << 20) or [])
        spread = ImageStat.Stat(rgb.convert("L")).stddev[0]
    assert colours > 50 and spread > 10, "the screenshot looks blank"
