"""A guest calls a unit from a browser: Debian's Chromium behind a NAT, the unit behind another, the relay
(real Prosody and coturn, relay/ rendered by relay/setup) between them; the unit is `emocall run`.

Needs root (namespaces; CI runs as root), prosody, coturn, chromium and ffmpeg (``.ci/setup --tests``).
The guest's camera is ../shared/data/clips/WolfgangLanger_Pexels.mp4 (crying, then surprised, then
laughing) as a Y4M file Chromium plays as its fake camera; the unit must describe the guest in that
order. The browser runs in the "phone" namespace (home 2 of tests/relay_net.py) through a wrapper
(``ip netns exec``); Playwright drives it over its pipe, which crosses namespaces.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.guests.invites import Invite, Invites
from appliance.guests.pages import guest_link
from appliance.identity import Identity
from appliance.state import StateStore

from .call_unit import write_tone
from .conftest import need
from .relay_net import (
    DOMAIN,
    HTTPS_PORT,
    SERVER_IP,
    TURN_PORT,
    TURNS_PORT,
    XMPP_PORT,
    Topology,
    TopologyUnavailable,
    topology,
    unavailable,
)
from .test_browser import ARGS, CHROMIUM, Process
from .test_browser import _login as login
from .test_pages_a11y import OVERFLOW

sync_api = pytest.importorskip("playwright.sync_api")
axe_module = pytest.importorskip("axe_playwright_python.sync_playwright")
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed"),
]

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "clips"
CLIP = CLIPS / "WolfgangLanger_Pexels.mp4"
EMOTION = re.compile(r"remote\.emotion: Priya: (\w+)")
SAID = re.compile(r"saying: (Priya [^\n]*)")
WAV_HEADER = 44
# How long the relay's TURN credentials for a guest last here (an hour on a real relay): long enough
# for a call to start on them, short enough for a test's call to outlive them.
GUEST_TTL = 10
# Every test's page calls from the same address, a new page each time: the relay's own 4 at once
# and then one every 250 s would refuse this module's calls TURN (tests/test_relay.py -k
# four_turn_credentials tests that rule).
CREDENTIALS = "1 (burst 100)"


@dataclass
class Home:
    net: Topology
    unit: Process
    invites: Invites
    store: StateStore
    jid: str
    folder: Path

    def link(self, once: bool = False, invites: Invites | None = None) -> tuple[Invite, str]:
        """A new invite for Priya and its link, made as the owner's page makes them."""
        invites = invites or self.invites
        invite = invites.create("Priya", 3600, once)
        return invite, guest_link(invites.token(invite, self.jid), self.jid)

    @contextmanager
    def phone_filtered(self, table: str, chain: str, home: int = 1) -> Iterator[None]:
        """The phone's router (or the unit's: ``home`` 0) forwards as ``chain`` (an nft forward
        chain's policy and rules) says, until the block ends."""
        hook = "type filter hook forward priority -10;"
        rules = f"table inet {table} {{\nchain forward {{ {hook} {chain} }}\n}}\n"
        router = ["ip", "netns", "exec", self.net.router(home)]
        subprocess.run([*router, "nft", "-f", "-"], input=rules, text=True, check=True, timeout=10)
        try:
            yield
        finally:
            subprocess.run([*router, "nft", "delete", "table", "inet", table], check=True, timeout=10)

    def phone_cut(self) -> AbstractContextManager[None]:
        """The phone's home cut off the internet: its router forwards nothing."""
        return self.phone_filtered("gst_cut", "policy drop;")

    def phone_turn_only(self) -> AbstractContextManager[None]:
        """The phone's router lets its UDP out to the relay's TURN port only: the phone's media can then
        flow through its own TURN allocation only."""
        rules = f'iifname "lan" meta l4proto udp udp dport != {TURN_PORT} drop;'
        return self.phone_filtered("gst_turn_only", rules)

    def phone_media_cut(self) -> AbstractContextManager[None]:
        """Only the phone's signalling gets out (XMPP over HTTPS to the relay): no media, not even TURN."""
        rules = f'iifname "lan" tcp dport != {HTTPS_PORT} drop; iifname "lan" meta l4proto udp drop;'
        return self.phone_filtered("gst_media_cut", rules)

    def phone_moved(self) -> AbstractContextManager[None]:
        """The phone moved to another network: every connection it had is dead, silently (no reset
        comes back), and new ones work."""
        return self.phone_filtered("gst_moved", "ct state new ct mark set 1; ct mark 0 drop;")

    def unit_off_the_relay(self) -> AbstractContextManager[None]:
        """The unit's connection to the relay is reset, both ways, and no new one opens: as the relay
        sees a unit switched off (its server then says it is not connected)."""
        rules = f"tcp dport {XMPP_PORT} reject with tcp reset; tcp sport {XMPP_PORT} reject with tcp reset;"
        return self.phone_filtered("gst_unit_off", rules, home=0)

    def hang_up_at_unit(self) -> None:
        command = [str(Path(sys.executable).with_name("emocall")), "hangup", "--port", "8080"]
        subprocess.run(["ip", "netns", "exec", self.net.home(0), *command], check=True, timeout=20)

    def restart_unit(self) -> None:
        """The unit stops as its service does (SIGTERM) and starts again, its log carried on."""
        stop(self.unit)
        self.unit = start_unit(self.net, self.folder, self.jid)


def start_unit(net: Topology, folder: Path, jid: str) -> Process:
    """`emocall run` in the unit's home, once it is connected to the relay."""
    log = folder / "asha.log"
    exe = Path(sys.executable).with_name("emocall")
    # The stanzas too (slixmpp's own debug lines): a test below reads what the unit sent.
    command = [str(exe), "-v", "--debug", "slixmpp", "--config", str(unit_config(folder, net, jid)), "run"]
    mark = len(log.read_text(errors="replace")) if log.exists() else 0  # as Process.mark counts
    with log.open("ab") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", net.home(0), *command], stdout=out, stderr=out)
    unit = Process("Asha", 8080, log, proc)
    unit.wait_for(r"relay\.state: connected to the relay", mark, timeout=60)
    return unit


def stop(unit: Process) -> None:
    unit.proc.terminate()
    try:
        unit.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        unit.proc.kill()


def unit_config(folder: Path, net: Topology, jid: str) -> Path:
    password = folder / "relay.password"
    tone = write_tone(folder / "unit-tone.wav", 440.0, seconds=3.0)
    config = folder / "unit.toml"
    config.write_text(
        f"""[unit]
name = "Asha"
data_dir = "{folder / "Asha"}"
[camera]
source = "file"
file = "{need(CLIPS / "single_face.mp4")}"
[web]
port = 8080
discovery = false
[call]
reconnect_seconds = 12
audio_in = "wav"
audio_file = "{tone}"
[speech]
output = "wav"
wav_file = "{folder / "speaker.wav"}"
# "Priya is calling from a browser", "Connected to Priya" and the consent take several seconds to
# say on a loaded machine: the first expression waits for them instead of being dropped as stale.
stale_seconds = 20
min_interval_seconds = 2
[display]
backend = "offscreen"
[relay]
jid = "{jid}"
password_file = "{password}"
server = "{SERVER_IP}:5222"
ca_file = "{net.relay.ca}"
"""
    )
    return config


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    folder = tmp_path_factory.mktemp("guests")
    try:
        with topology(
            folder / "relay", area="gst", guest_ttl=GUEST_TTL, guest_credentials=CREDENTIALS
        ) as net:
            jid, password = net.relay.add_unit("asha")
            (folder / "relay.password").write_text(password)
            data = folder / "Asha"  # where tests/test_browser.py's Process reads the display
            data.mkdir(mode=0o700)
            store = StateStore(data / "state.db", defaults={"display_name": "Asha"})
            # The owner shares expressions with paired units; a guest must still get none of them.
            store.update_settings({"auto_answer": True, "share_expressions": True})
            invites = Invites(Identity.load_or_create(data / "identity.key"), store)
            home = Home(net, start_unit(net, folder, jid), invites, store, jid, folder)
            try:
                yield home
            finally:
                stop(home.unit)
                store.close()
    except TopologyUnavailable as e:
        unavailable(e)


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The guest's camera (the clip as Y4M, about 5 MB a second) and microphone (a tone). From 1 s
    in, where she is crying, and that frame held 10 s: the unit's greeting and the call's first
    sentences are over before her face changes, so one pass of the clip is said in order."""
    folder = tmp_path_factory.mktemp("camera")
    y4m = folder / "guest.y4m"
    command = ["ffmpeg", "-loglevel", "error", "-y", "-ss", "1", "-i", str(need(CLIP))]
    subprocess.run(
        [
            *command,
            "-vf",
            "scale=640:360,fps=15,tpad=start_duration=10:start_mode=clone",
            "-pix_fmt",
            "yuv420p",
            str(y4m),
        ],
        check=True,
        timeout=120,
    )
    return y4m, write_tone(folder / "guest-tone.wav", 660.0, seconds=5.0)


@pytest.fixture
def playwright() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        yield pw


@pytest.fixture
def browser(home: Home, camera: tuple[Path, Path], playwright: Any) -> Iterator[Any]:
    with phone(home, camera, playwright) as page:
        yield page


@contextmanager
def phone(home: Home, camera: tuple[Path, Path], playwright: Any, allowed: bool = True) -> Iterator[Any]:
    """A page in Chromium on the phone, with the clip as its camera and a tone as its microphone;
    ``allowed``: the page may use both (else it may use what the test grants its context)."""
    y4m, wav = camera
    args = [
        *ARGS,
        *(["--use-fake-ui-for-media-stream"] if allowed else []),
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}",
        f"--use-file-for-fake-audio-capture={wav}",
        f"--host-resolver-rules=MAP {DOMAIN} {SERVER_IP}",
        # The relay's certificate (from the test's throwaway CA) is trusted, and no other: for the
        # page's HTTPS and WebSocket, and for TURN over TLS.
        f"--ignore-certificate-errors-spki-list={home.net.relay.spki()}",
        "--autoplay-policy=no-user-gesture-required",
    ]
    chromium = playwright.chromium.launch(
        executable_path=str(in_namespace(home, 1)), args=args, headless=True
    )
    try:
        context = chromium.new_context()
        page = context.new_page()
        page.set_default_timeout(20_000)
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        yield page
        print("\n".join(["the page's console:", *console]))
    finally:
        chromium.close()


def in_namespace(home: Home, i: int) -> Path:
    """Chromium run in home ``i``'s namespace (Playwright's pipe to it crosses namespaces)."""
    wrapper = home.folder / f"chromium-in-home{i + 1}"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {home.net.home(i)} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def audit(page: Any, when: str, failures: list[str]) -> None:
    results = axe_module.Axe().run(page)
    for v in results.response["violations"]:
        if v["impact"] in ("serious", "critical"):
            failures.append(f"{when}: {v['id']} ({v['impact']}): {v['help']}")


def stats(page: Any) -> dict[str, Any]:
    return dict(page.evaluate("() => window.emocallGuest.stats()"))


def wait_stats(page: Any, key: str, above: float | str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (now := stats(page))[key] <= above:
        assert time.monotonic() < deadline, f"{key} stayed at {now}"
        time.sleep(0.5)
    return now


def speaker_rms(wav: Path) -> float:
    """The RMS of what the unit's speaker played so far (its WAV's header is written at the end)."""
    data = wav.read_bytes()[WAV_HEADER:]
    pcm = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(pcm**2))) if pcm.size else 0.0


def test_a_guest_calls_and_the_unit_describes_their_face(home: Home, browser: Any) -> None:
    page, unit, expect = browser, home.unit, sync_api.expect
    failures: list[str] = []
    page.goto(home.link()[1])
    call = page.get_by_role("button", name="Call Asha")
    expect(call).to_be_visible()
    expect(page.get_by_role("checkbox", name="Describe my expressions during the call")).to_be_checked()
    audit(page, "before the call", failures)
    page.set_viewport_size({"width": 320, "height": 640})  # a small phone: nothing scrolls sideways
    assert page.evaluate(OVERFLOW) == []
    mark = unit.mark()
    started = time.monotonic()
    call.click()
    unit.wait_for(r"call\.state: Priya is calling", mark, timeout=30)
    expect(page.get_by_role("status")).to_have_text("In a call with Asha.", timeout=30_000)
    connected_s = time.monotonic() - started
    unit.wait_for(r"remote\.emotion: Priya: \w+", mark, timeout=30)
    first_s = time.monotonic() - started - connected_s
    assert unit.wait_for(r"saying: Priya is calling from a browser", mark, timeout=10)
    expect(page.get_by_role("button", name="Hang up")).to_be_focused()
    audit(page, "during the call", failures)
    assert page.evaluate(OVERFLOW) == []
    # The browser plays the unit's video and sound.
    decoded = wait_stats(page, "framesDecoded", 30)
    wait_stats(page, "audioEnergy", 0)
    # The unit describes the guest's face in the clip's order, crying first, laughing last, and says
    # each as it comes (the crying face is held until the unit's first sentences are over).
    sad = unit.wait_for(r"saying: Priya seems sad\.", mark, timeout=40)
    happy = unit.wait_for(r"remote\.emotion: Priya: happiness", sad.end(), timeout=30)
    emotions = EMOTION.findall(unit.log.read_text(errors="replace")[mark : happy.end()])
    assert emotions[0] == "sadness" and emotions[-1] == "happiness", emotions
    unit.wait_for(r"saying: Priya looks happy\.", happy.end(), timeout=20)
    said = SAID.findall(unit.log.read_text(errors="replace")[mark:])
    # The owner's face was analysed (sharing is on), and none of it reached the guest.
    assert re.search(r"vision\.emotion: ", unit.log.read_text(errors="replace")[mark:])
    received = page.evaluate("() => window.emocallGuest.received()")
    assert received.get("heartbeat", 0) > 5 and "emotion" not in received, received
    page.get_by_role("button", name="Mute my microphone").click()
    expect(page.get_by_role("button", name="Mute my microphone")).to_have_attribute("aria-pressed", "true")
    mark = unit.mark()
    page.get_by_role("button", name="Hang up").click()
    expect(page.get_by_role("status")).to_have_text("You hung up. The call ended.")
    unit.wait_for(r"call\.state: Priya hung up", mark, timeout=15)
    unit.wait_for(r"call\.state: ready for calls", mark, timeout=15)
    audit(page, "after the call", failures)
    assert speaker_rms(home.folder / "speaker.wav") > 100
    print(f"connected in {connected_s:.1f} s, first expression {first_s:.1f} s later; {decoded}; said {said}")
    assert failures == []


def test_the_unit_hangs_up_and_the_page_says_so(home: Home, browser: Any) -> None:
    page, unit, expect = browser, home.unit, sync_api.expect
    page.goto(home.link()[1])
    page.get_by_role("checkbox", name="Describe my expressions during the call").uncheck()
    mark = unit.mark()
    page.get_by_role("button", name="Call Asha").click()
    expect(page.get_by_role("status")).to_have_text("In a call with Asha.", timeout=30_000)
    unit.wait_for(r"remote\.sharing: Priya asked not to have their expressions described", mark)
    unit.wait_for(r"saying: Priya paused sharing expressions\.", mark, timeout=20)
    home.hang_up_at_unit()
    expect(page.get_by_role("status")).to_have_text("Asha hung up. The call ended.", timeout=15_000)
    unit.wait_for(r"call\.state: ready for calls", mark, timeout=15)
    assert not EMOTION.findall(unit.log.read_text(errors="replace")[mark:])  # nothing described


def test_bad_invites_get_a_clear_page_and_never_ring(home: Home, browser: Any) -> None:
    page, unit, expect = browser, home.unit, sync_api.expect
    failures: list[str] = []
    _, once = home.link(once=True)
    page.goto(once)
    mark = unit.mark()
    page.get_by_role("button", name="Call Asha").click()
    expect(page.get_by_role("status")).to_have_text("In a call with Asha.", timeout=30_000)
    page.get_by_role("button", name="Hang up").click()
    unit.wait_for(r"call\.state: ready for calls", mark, timeout=15)
    invite, revoked = home.link()
    home.invites.revoke(invite.id)
    address, token = home.link()[1].rsplit("#", 1)
    forged = f"{address}#{token[:-4]}AAAA"
    key = Identity.load_or_create(home.folder / "Asha" / "identity.key")
    # Made two hours ago for one hour, signed by the unit: it has expired, which the unit says (a
    # phone's clock may be hours off); one that ended two days ago the page says by itself.
    _, expired = home.link(invites=Invites(key, home.store, lambda: time.time() - 7200))
    _, long_expired = home.link(invites=Invites(key, home.store, lambda: time.time() - 2 * 86400))
    cases = {
        "used": (once, "This invite worked for one call only. Ask Asha for a new link."),
        "revoked": (revoked, "This invite was withdrawn. Ask Asha for a new link."),
        "forged": (forged, "This link is not a valid invite. Check that it was copied whole."),
        "expired": (expired, "This invite has expired. Ask Asha for a new link."),
    }
    for what, (link, said) in cases.items():
        mark = unit.mark()
        page.goto("about:blank")
        page.goto(link)
        page.get_by_role("button", name="Call Asha").click()
        expect(page.get_by_role("alert")).to_have_text(said, timeout=30_000)
        expect(page.get_by_role("button", name="Call Asha")).to_be_hidden()
        audit(page, f"a {what} invite", failures)
        assert "call.state" not in unit.log.read_text(errors="replace")[mark:], what
    page.goto("about:blank")
    page.goto(long_expired)  # refused by the page itself: it reads the invite's end
    expect(page.get_by_role("alert")).to_have_text("This invite has expired. Ask Asha for a new link.")
    expect(page.get_by_role("button", name="Call Asha")).to_be_hidden()
    audit(page, "an expired invite", failures)
    assert failures == []


def in_a_call(home: Home, page: Any, link: str) -> int:
    """Call from ``page`` with ``link`` until connected; the unit's log position before the call."""
    mark = home.unit.mark()
    page.goto(link)
    page.get_by_role("button", name="Call Asha").click()
    sync_api.expect(page.get_by_role("status")).to_have_text("In a call with Asha.", timeout=30_000)
    return mark


def test_a_second_guest_hears_the_unit_is_busy(home: Home, browser: Any) -> None:
    page, unit, expect = browser, home.unit, sync_api.expect
    mark = in_a_call(home, page, home.link()[1])
    other = page.context.new_page()
    other.goto(home.link()[1])
    other.get_by_role("button", name="Call Asha").click()
    expect(other.get_by_role("status")).to_have_text(
        "Asha is in another call. Try again later.", timeout=30_000
    )
    expect(other.get_by_role("button", name="Call Asha")).to_be_enabled()
    assert len(re.findall(r"call\.state: Priya is calling", unit.log.read_text(errors="replace")[mark:])) == 1
    page.get_by_role("button", name="Hang up").click()
    unit.wait_for(r"call\.state: ready for calls", mark, timeout=15)


def dropped_and_back(home: Home, page: Any, mark: int) -> float:
    """The phone's network cut until both sides notice, then back: the seconds until the page says the
    call is back."""
    status = page.get_by_role("status")
    with home.phone_cut():
        home.unit.wait_for(r"call\.state: lost contact with Priya", mark, timeout=15)
        sync_api.expect(status).to_have_text("The connection to Asha dropped. Reconnecting…", timeout=15_000)
    started = time.monotonic()
    sync_api.expect(status).to_have_text("Reconnected. In a call with Asha.", timeout=30_000)
    return time.monotonic() - started


def test_the_call_comes_back_after_the_phone_changes_network(home: Home, browser: Any) -> None:
    """Every connection the phone had dies, the relay's too (unknown to the browser): the page's
    first re-offer waited STEP_MS (15 s) for the relay before opening a new connection, longer
    than this unit waits for a re-offer (reconnect_seconds, 12 s here): the call was lost."""
    page, unit = browser, home.unit
    status = page.get_by_role("status")
    mark = in_a_call(home, page, home.link()[1])
    with home.phone_moved():
        unit.wait_for(r"call\.state: lost contact with Priya", mark, timeout=15)
        sync_api.expect(status).to_have_text("The connection to Asha dropped. Reconnecting…", timeout=15_000)
        started = time.monotonic()
        sync_api.expect(status).to_have_text("Reconnected. In a call with Asha.", timeout=30_000)
        seconds = time.monotonic() - started
        back = unit.wait_for(
            r"call\.state: connected to Priya", unit.wait_for(r"lost contact", mark).end(), timeout=5
        )
        unit.wait_for(r"saying: Reconnecting\.", mark, timeout=15)
        print(f"reconnected {seconds:.1f} s after the page said the call dropped ({back.group(0)})")
        frames = stats(page)["framesDecoded"]
        wait_stats(page, "framesDecoded", frames)  # the unit's video flows again, on new connections
        page.get_by_role("button", name="Hang up").click()
        unit.wait_for(r"call\.state: ready for calls", mark, timeout=15)


def test_a_call_that_outlives_its_turn_credentials_comes_back_on_new_ones(home: Home, browser: Any) -> None:
    """The phone's media can go through its own TURN allocation only. The call outlives the credentials
    it began with (GUEST_TTL here), drops and comes back: coturn refuses expired credentials a new
    allocation, so the re-offer must have asked the relay for new ones."""
    page, unit = browser, home.unit
    with home.phone_turn_only():
        mark = in_a_call(home, page, home.link()[1])
        assert wait_stats(page, "local", "")["local"] == "relay"
        time.sleep(GUEST_TTL + 1)
        dropped_and_back(home, page, mark)
        assert wait_stats(page, "local", "")["local"] == "relay"
        wait_stats(page, "framesDecoded", stats(page)["framesDecoded"])  # the unit's video flows again
        page.get_by_role("button", name="Hang up").click()
        unit.wait_for(r"call\.state: ready for calls", mark, timeout=15)


@pytest.mark.parametrize("cut", ["everything", "media"])
def test_a_call_lost_for_good_ends_on_both_sides(home: Home, browser: Any, cut: str) -> None:
    """The phone's network is cut for good, or only its media (its signalling still gets through):
    both sides end the call and say it was lost, the unit once it stops waiting for a re-offer that
    connects (reconnect_seconds, 12 s here), the page at its deadline, counted as the unit counts
    its own (it used to wait its own 30 s, and ended 43 s after the cut). With its signalling up,
    the page's re-offers reach the unit and are answered, and the unit gives the last one answered
    its time to connect (15 s) before it gives up: the page waits as long, and says the same."""
    page, unit, expect = browser, home.unit, sync_api.expect
    mark = in_a_call(home, page, home.link()[1])
    with home.phone_cut() if cut == "everything" else home.phone_media_cut():
        since = time.monotonic()
        expect(page.get_by_role("status")).to_have_text(
            "The connection to Asha was lost. The call ended.", timeout=45_000
        )
        # The unit's silence before a loss (4 s) and its wait (12 s), a re-offer's time to connect
        # where one was answered, and a heartbeat or two.
        assert time.monotonic() - since < 4 + 12 + (15 if cut == "media" else 0) + 6
        unit.wait_for(r"call\.state: the call with Priya was lost", mark, timeout=20)
        unit.wait_for(r"saying: Connection lost\.", mark, timeout=15)
    expect(page.get_by_role("button", name="Call Asha")).to_be_focused()


@contextmanager
def page_suspended(home: Home) -> Iterator[None]:
    """The phone stops the page as it stops one it does not show: the renderer processes of the
    phone's Chromium (those in its namespace), whose WebRTC stack goes with them (Chromium's own
    freeze, over CDP, left a page in a call running)."""
    in_phone = subprocess.run(
        ["ip", "netns", "pids", home.net.home(1)], capture_output=True, text=True, check=True
    ).stdout.split()
    renderers = [int(pid) for pid in in_phone if "--type=renderer" in _command_line(pid)]
    assert renderers, "no renderer in the phone's namespace"
    try:
        for pid in renderers:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        for pid in renderers:
            with suppress(ProcessLookupError):  # one that went meanwhile
                os.kill(pid, signal.SIGCONT)


def _command_line(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except FileNotFoundError:  # gone since it was listed
        return ""


def test_a_page_the_phone_froze_past_the_units_wait_hears_the_call_was_lost(home: Home, browser: Any) -> None:
    """The phone suspends the page in a call (a locked screen) for longer than the unit waits for a
    re-offer. The unit ends the call as lost. When the page runs again it offers again, and the
    unit answers that the call was lost: the page says so (the unit did not hang up)."""
    page, unit, expect = browser, home.unit, sync_api.expect
    mark = in_a_call(home, page, home.link()[1])
    with page_suspended(home):
        unit.wait_for(r"call\.state: the call with Priya was lost", mark, timeout=30)
    resumed = time.monotonic()
    unit.wait_for(r"answered a re-offer for a call already over here: lost", mark, timeout=20)
    status = page.get_by_role("status")
    expect(status).to_have_text("The connection to Asha was lost. The call ended.", timeout=10_000)
    # From that answer: the page's own deadline is the unit's wait (12 s) after it runs again.
    assert time.monotonic() - resumed < 9
    expect(page.get_by_role("button", name="Call Asha")).to_be_focused()


def test_the_owner_invites_and_withdraws_on_the_units_page(home: Home, browser: Any, playwright: Any) -> None:
    guest, expect = browser, sync_api.expect
    failures: list[str] = []
    chromium = playwright.chromium.launch(
        executable_path=str(in_namespace(home, 0)), args=ARGS, headless=True
    )
    try:
        owner = chromium.new_page()
        owner.set_default_timeout(20_000)
        login(owner, home.unit, expect)
        owner.get_by_role("link", name="Guests").click()
        audit(owner, "the guests page", failures)
        owner.get_by_label("Guest's name (this unit says it when they call)").fill("Priya")
        owner.get_by_label("The link works for").select_option(label="1 week")
        owner.get_by_label("For one call").check()
        owner.get_by_role("button", name="Make the invite link").click()
        expect(owner.get_by_role("status")).to_contain_text(
            "Invite for Priya made. Send Priya the link below"
        )
        audit(owner, "the guests page with an invite", failures)
        made = owner.url.rsplit("#invite-", 1)[1]  # the page jumps to the new invite
        link = owner.locator(f"#link-{made}").input_value()
        guest.goto(link)
        expect(guest.get_by_role("button", name="Call Asha")).to_be_visible()
        withdraw = owner.locator(f"#invite-{made}").get_by_role(
            "button", name=re.compile("^Withdraw Priya's")
        )
        withdraw.click()
        expect(owner.get_by_role("status")).to_have_text(
            "Priya's invite is withdrawn: the link no longer rings this unit."
        )
        mark = home.unit.mark()
        guest.get_by_role("button", name="Call Asha").click()
        expect(guest.get_by_role("alert")).to_have_text("This invite was withdrawn. Ask Asha for a new link.")
        assert "call.state" not in home.unit.log.read_text(errors="replace")[mark:]
    finally:
        chromium.close()
    assert failures == []


def test_a_guest_without_a_camera_calls_with_sound_only(
    home: Home, camera: tuple[Path, Path], playwright: Any
) -> None:
    """The browser refuses the page the microphone: an alert says what to do and nothing rings. Then
    the microphone is allowed and the camera is not: the call has sound only, the page says so, and
    the guest still sees the unit; the unit tells its owner that no expressions will come."""
    expect, unit = sync_api.expect, home.unit
    failures: list[str] = []
    with phone(home, camera, playwright, allowed=False) as page:
        page.goto(home.link()[1])
        mark = unit.mark()
        page.get_by_role("button", name="Call Asha").click()
        expect(page.get_by_role("alert")).to_have_text(
            "This page may not use your microphone. Allow the microphone for this page in your browser"
            ' (usually a button beside the address), then press "Call Asha" again.'
        )
        expect(page.get_by_role("button", name="Call Asha")).to_be_enabled()
        audit(page, "the microphone refused", failures)
        assert "call.state" not in unit.log.read_text(errors="replace")[mark:]
        page.context.grant_permissions(["microphone"])
        page.get_by_role("button", name="Call Asha").click()
        expect(page.get_by_role("status")).to_have_text("In a call with Asha.", timeout=30_000)
        expect(page.get_by_role("alert")).to_be_hidden()
        expect(page.get_by_text("Your camera is off for this call")).to_be_visible()
        wait_stats(page, "framesDecoded", 15)  # the unit's video all the same
        # The owner hears why no expressions come, as when a unit pauses sharing.
        unit.wait_for(r"remote\.sharing: Priya sends no video", mark, timeout=10)
        unit.wait_for(r"saying: Priya paused sharing expressions\.", mark, timeout=20)
        audit(page, "a call with sound only", failures)
        page.get_by_role("button", name="Hang up").click()
        unit.wait_for(r"call\.state: ready for calls", mark, timeout=15)
        assert not EMOTION.findall(unit.log.read_text(errors="replace")[mark:])
    assert failures == []


@contextmanager
def ringing(home: Home, playwright: Any) -> Iterator[None]:
    """The unit rings instead of answering by itself (set on its settings page) until the block ends."""
    chromium = playwright.chromium.launch(
        executable_path=str(in_namespace(home, 0)), args=ARGS, headless=True
    )

    def auto_answer(on: bool) -> None:
        owner.get_by_role("link", name="Settings").click()
        owner.get_by_label("Answer calls from paired units by itself").set_checked(on)
        owner.get_by_role("button", name="Save settings").click()
        sync_api.expect(owner.get_by_role("status")).to_contain_text("Settings saved.")

    try:
        owner = chromium.new_page()
        owner.set_default_timeout(20_000)
        login(owner, home.unit, sync_api.expect)
        auto_answer(False)
        try:
            yield
        finally:
            auto_answer(True)
    finally:
        chromium.close()


def test_the_guest_cancels_while_the_unit_rings(home: Home, browser: Any, playwright: Any) -> None:
    page, unit, expect = browser, home.unit, sync_api.expect
    with ringing(home, playwright):
        page.goto(home.link()[1])
        mark = unit.mark()
        page.get_by_role("button", name="Call Asha").click()
        unit.wait_for(r"call\.state: Priya is calling", mark, timeout=30)
        page.get_by_role("button", name="Cancel the call").click()
        expect(page.get_by_role("status")).to_have_text("You cancelled the call.")
        unit.wait_for(r"call\.state: missed call from Priya", mark, timeout=10)
        unit.wait_for(r"call\.state: ready for calls", mark, timeout=15)
        expect(page.get_by_role("button", name="Call Asha")).to_be_enabled()
        expect(page.get_by_role("button", name="Cancel the call")).to_be_hidden()


def test_the_page_stops_ringing_a_unit_that_went_off_the_relay_or_restarted(
    home: Home, browser: Any, playwright: Any
) -> None:
    """A unit switched off, cut off or restarted while it rang left the page "Waiting for an
    answer" for 130 s (the longest ring and 10 s). While it rings, the page asks the unit through
    the relay every 10 s (the first time 10 s after its offer) whether it still has the call, and
    goes on waiting while the unit answers. Cut off: the page says it cannot be reached once two
    checks in a row fail, answered by the relay's error (the unit is not connected) or not at all.
    Restarted (an update, or a crash and systemd's restart): the unit is back on the relay in
    seconds, ringing no more; restarted as it answers a check, it is back before the next one,
    answers that it does not know the call, and the page says so and sends its bye. (The bye after
    a unit gone, sent again until the unit is back, is tests/test_guest_page.py's ``-k
    goes_off_the_relay``.)"""
    page, unit, expect = browser, home.unit, sync_api.expect
    calling = "Calling Asha. Waiting for an answer…"
    with ringing(home, playwright):
        page.goto(home.link()[1])
        mark = unit.mark()
        page.get_by_role("button", name="Call Asha").click()
        try:
            unit.wait_for(r"call\.state: Priya is calling", mark, timeout=30)
            off = time.monotonic()
            with home.unit_off_the_relay():
                expect(page.get_by_role("status")).to_have_text(
                    "Asha's unit cannot be reached now: it may be switched off. Try again later.",
                    timeout=40_000,
                )
                print(f"said {time.monotonic() - off:.1f} s after the unit went off the relay")
                # The first check 10 s after the offer, refused or unanswered (5 s, then the
                # relay's answer to a ping), and one more 3 s later: 23 s at most.
                assert time.monotonic() - off < 25
            home.restart_unit()  # back at once (its relay client's own reconnect waits longer)
            unit, mark = home.unit, home.unit.mark()
            page.get_by_role("button", name="Call Asha").click()
            unit.wait_for(r"call\.state: Priya is calling", mark, timeout=30)
            # The unit answers the page's check (not a bye: the last ring's may come again), and
            # the page goes on waiting.
            asked = unit.wait_for(r"RECV: [^\n]*/api/guest/call", mark, timeout=20)
            unit.wait_for(r'SEND: <iq (?=[^\n]*type="result")[^\n]*@guests\.', asked.end(), timeout=5)
            expect(page.get_by_role("status")).to_have_text(calling)
            off = time.monotonic()
            home.restart_unit()
            back, mark = time.monotonic() - off, home.unit.mark()
            expect(page.get_by_role("status")).to_have_text(
                "Asha's unit stopped ringing: it may have restarted. Press Call to call again.",
                timeout=30_000,
            )
            said = time.monotonic() - off
            print(f"said {said:.1f} s after the unit stopped; it was back on the relay {back:.1f} s after")
            home.unit.wait_for(r"RECV: [^\n]*/api/guest/signal", mark, timeout=10)  # the page's bye
        finally:
            home.hang_up_at_unit()  # for the next test, should a ring outlast this one
    expect(page.get_by_role("button", name="Call Asha")).to_be_enabled()


def test_closing_the_page_hangs_up_at_once(home: Home, browser: Any) -> None:
    """Not after the five silent seconds that count a call lost, and the reconnecting that follows."""
    unit = home.unit
    mark = in_a_call(home, browser, home.link()[1])
    browser.close()
    unit.wait_for(r"call\.state: Priya hung up", mark, timeout=4)
    assert "lost contact" not in unit.log.read_text(errors="replace")[mark:]
    unit.wait_for(r"call\.state: ready for calls", mark, timeout=15)


def test_a_guest_behind_a_symmetric_nat_calls_through_turn(home: Home, browser: Any) -> None:
    page, unit = browser, home.unit
    home.net.set_symmetric(True)  # a new outside port for every destination: only TURN joins it
    try:
        mark = in_a_call(home, page, home.link()[1])
        wait_stats(page, "framesDecoded", 15)
        now = wait_stats(page, "local", "")  # the transport reports its chosen pair a moment after media
        assert "relay" in (now["local"], now["remote"]), now
        print(f"behind a symmetric NAT: {now}")
        page.get_by_role("button", name="Hang up").click()
        unit.wait_for(r"call\.state: ready for calls", mark, timeout=15)
    finally:
        home.net.set_symmetric(False)


def test_a_guest_on_a_network_that_lets_out_only_tls_calls_through_turns(home: Home, browser: Any) -> None:
    """The phone's network lets out TCP to the relay's HTTPS and TURNS ports only, as some office and
    hotel networks do: the page signs in over HTTPS and its media goes through TURN over TLS."""
    page, unit = browser, home.unit
    tls = f'iifname "lan" tcp dport != {{ {HTTPS_PORT}, {TURNS_PORT} }} drop;'
    rules = f'{tls} iifname "lan" meta l4proto udp drop;'
    with home.phone_filtered("gst_tls_only", rules):
        mark = in_a_call(home, page, home.link()[1])
        wait_stats(page, "framesDecoded", 15)
        now = wait_stats(page, "relayProtocol", "")
        assert (now["local"], now["relayProtocol"]) == ("relay", "tls"), now
        print(f"through TURN over TLS only: {now}")
        page.get_by_role("button", name="Hang up").click()
        unit.wait_for(r"call\.state: ready for calls", mark, timeout=15)


def test_the_guest_signal_answers_only_what_the_relay_brings_from_a_guest(home: Home) -> None:
    """Straight to the unit's web server (from its own home), even with a valid invite: refused."""
    _, link = home.link()
    body = {"invite": link.rsplit("#", 1)[1], "call": "0" * 32, "signal": {"kind": "offer", "sdp": "v=0"}}
    ask = (
        "import json, sys, urllib.request, urllib.error\n"
        "r = urllib.request.Request('http://127.0.0.1:8080/api/guest/signal', data=sys.stdin.read().encode(),"
        " headers={'Content-Type': 'application/json'})\n"
        "try:\n    urllib.request.urlopen(r, timeout=10)\nexcept urllib.error.HTTPError as e:\n"
        "    print(e.code, json.load(e)['error'])\n"
    )
    mark = home.unit.mark()
    done = subprocess.run(
        ["ip", "netns", "exec", home.net.home(0), sys.executable, "-c", ask],
        input=json.dumps(body), capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "403 only a guest's browser, through the relay, may send this"
    assert "call.state" not in home.unit.log.read_text(errors="replace")[mark:]


def test_a_guest_account_cannot_follow_the_units_presence(home: Home) -> None:
    """Anyone may sign in on the guest host: the relay drops its presence subscription
    (relay/guests.pfw), so none reaches the unit, none waits in the unit's roster while it is away
    (sent again at every start of the unit, one more for every stranger), and nothing answers it.
    The unit would refuse one at once all the same (appliance/relay/client.py)."""
    ask = {"jid": f"guests.{DOMAIN}", "anonymous": True, "ca": str(home.net.relay.ca), "to": home.jid}
    command = [sys.executable, "-m", "tests.relay_probe", "subscribe", json.dumps({**ask, "seconds": 3})]
    mark = home.unit.mark()
    done = subprocess.run(
        ["ip", "netns", "exec", home.net.home(1), *command],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"answers": []}, done.stdout
    heard = home.unit.log.read_text(errors="replace")[mark:]
    assert not re.search(r"RECV: <presence [^>]*@guests\.", heard), heard[-3000:]
    assert "RECV: <" in home.unit.log.read_text(errors="replace"), "the unit logs no stanza it receives"
    roster = home.net.relay.dir / "data" / DOMAIN.replace(".", "%2e") / "roster" / "asha.dat"
    assert not roster.exists() or "guests." not in roster.read_text(), roster.read_text()
