"""End to end in a real browser: two units as two processes pair over the LAN and unpair.

Debian's Chromium, driven headless by Playwright (no browser download). Each unit is an
``emocall run`` process; the test reads the codes each unit shows (and says) from the text its
off-screen display writes beside its snapshot, and audits every page with axe-core.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

sync_api = pytest.importorskip("playwright.sync_api")
axe_module = pytest.importorskip("axe_playwright_python.sync_playwright")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
)


@dataclass
class Process:
    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, pattern: str, after: int = 0, timeout: float = 15) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.compile(pattern).search(self.log.read_text(errors="replace"), after)
            if found:
                return found
            assert self.proc.poll() is None, f"{self.name} exited:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.1)
        raise AssertionError(f"{self.name} never logged {pattern!r}:\n{self.log.read_text()[-3000:]}")

    @property
    def screen(self) -> Path:
        """What the unit's off-screen display shows, a line per element (next to display.png)."""
        return self.log.parent / self.name / "display.txt"

    def shown_code(self) -> str:
        text = self.screen.read_text() if self.screen.exists() else ""
        found = re.search(r"^(\d{6})$", text, re.MULTILINE)
        return found.group(1) if found else ""

    def next_code(self, before: str, timeout: float = 15) -> str:
        """The code the unit shows (and says) once it differs from ``before``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (code := self.shown_code()) and code != before:
                return code
            assert self.proc.poll() is None, f"{self.name} exited:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.1)
        raise AssertionError(f"{self.name} showed no new code:\n{self.log.read_text()[-3000:]}")

    def mark(self) -> int:
        return len(self.log.read_text(errors="replace"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _start(tmp: Path, name: str) -> Process:
    port = _free_port()
    log = tmp / f"{name}.log"
    exe = Path(sys.executable).with_name("emocall")
    cmd = [
        str(exe),
        "-v",
        "run",
        "--data-dir",
        str(tmp / name),
        "--port",
        str(port),
        "--source",
        "pattern",
        "--name",
        name,
    ]
    # The code is read from the off-screen display's text: file outputs are chosen, never implied.
    # Fast speech: a stop waits for the sentence being said, and the start-up one is long here.
    env = {**os.environ, "EMOCALL_DISPLAY__BACKEND": "offscreen", "EMOCALL_SPEECH__RATE_WPM": "450"}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    unit = Process(name, port, log, proc)
    unit.wait_for(r"unit\.ready", timeout=60)
    return unit


@pytest.fixture
def two_units(tmp_path: Path) -> Iterator[tuple[Process, Process]]:
    suffix = os.urandom(2).hex()
    started: list[Process] = []
    try:
        started.append(_start(tmp_path, f"Asha-{suffix}"))
        started.append(_start(tmp_path, f"Bela-{suffix}"))
        yield started[0], started[1]
    finally:
        for unit in started:
            unit.proc.send_signal(signal.SIGTERM)
        for unit in started:
            try:
                unit.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                unit.proc.kill()


def _audit(page: Any, axe: Any, failures: list[str]) -> None:
    results = axe.run(page)
    for v in results.response["violations"]:
        if v["impact"] in ("serious", "critical"):
            failures.append(f"{page.url}: {v['id']} ({v['impact']}): {v['help']}")


def _login(page: Any, unit: Process, expect: Any) -> None:
    page.goto(f"{unit.url}/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Enter the code the unit is saying now")
    before = unit.shown_code()
    page.get_by_role("button", name="Ask the unit for a code").click()
    expect(page.get_by_role("status")).to_contain_text("saying a code now")
    page.get_by_label("Code (six digits)").fill(unit.next_code(before))
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Status of")


def test_two_units_pair_and_unpair_in_a_browser(two_units: tuple[Process, Process]) -> None:
    a, b = two_units
    expect = sync_api.expect
    axe = axe_module.Axe()
    failures: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(f"{a.url}/")
            _audit(page, axe, failures)  # the login page
            _login(page, a, expect)
            _audit(page, axe, failures)  # status, no unit paired

            # Discovery: B appears on A's pairing page (mDNS can take a few seconds).
            pair_with_b = page.get_by_role("button", name=f"Pair with {b.name}")
            for _ in range(20):
                page.goto(f"{a.url}/pair")
                if pair_with_b.count():
                    break
                time.sleep(0.5)
            _audit(page, axe, failures)
            before = b.shown_code()
            pair_with_b.click()
            expect(page.get_by_role("status")).to_contain_text(f"{b.name} is showing and saying a code")
            _audit(page, axe, failures)  # with the code form
            page.get_by_label(f"Code shown and said by {b.name} (six digits)").fill(b.next_code(before))
            page.get_by_role("button", name="Pair", exact=True).click()
            expect(page.get_by_role("status")).to_have_text(f"Paired with {b.name}.")
            b.wait_for(rf"pairing\.done: Paired with {a.name}")
            _audit(page, axe, failures)  # with a paired unit

            page.goto(f"{a.url}/settings")
            _audit(page, axe, failures)
            page.get_by_label("Volume (percent)").fill("40")
            page.get_by_role("button", name="Save settings").click()
            expect(page.get_by_role("status")).to_have_text("Settings saved.")
            expect(page.get_by_label("Volume (percent)")).to_have_value("40")

            page.goto(f"{a.url}/")
            expect(page.get_by_role("button", name=f"Call {b.name}")).to_be_visible()
            _audit(page, axe, failures)

            page.goto(f"{a.url}/pair")
            mark = b.mark()
            page.get_by_role("button", name=f"Unpair {b.name}").click()
            page.get_by_role("button", name=f"Yes, unpair {b.name}").click()  # unpairing is confirmed
            expect(page.get_by_role("status")).to_have_text(f"Unpaired {b.name}.")
            b.wait_for(rf"pairing\.removed: No longer paired with {a.name}", mark)
            # B's own page agrees: nothing paired.
            other = browser.new_page()
            other.set_default_timeout(15_000)
            _login(other, b, expect)
            expect(other.get_by_text("No unit is paired yet.")).to_be_visible()
            other.goto(f"{b.url}/nowhere")
            _audit(other, axe, failures)  # the error page
        finally:
            browser.close()
    assert failures == []
