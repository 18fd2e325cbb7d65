from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from flask import Flask

from appliance import __version__, cli, config, selftest
from appliance.app import Appliance
from appliance.audio.wav import read_wav
from appliance.call import local
from appliance.call.lan import host_address
from appliance.events import EventBus
from appliance.speech.service import say_once
from appliance.state import STATE_FILE, StateStore
from appliance.web import owner

from .conftest import CLIPS, appliance_config, need
from .test_speech import rms


def emocall(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_version() -> None:
    result = emocall("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"emocall {__version__}"


def test_selftest_json_names_each_backend() -> None:
    result = emocall("selftest", "--json", "--source", str(need(CLIPS / "single_face.mp4")))
    report = json.loads(result.stdout)
    parts = {p["part"]: p for p in report["parts"]}
    assert parts["camera"] == {
        "part": "camera",
        "backend": "file",
        "ok": True,
        "detail": "delivered a 640x360 frame",
    }
    assert {"edgetpu", "speech", "audio"} <= parts.keys()
    assert all(p["backend"] and p["detail"] for p in parts.values())
    assert result.returncode == 0


def test_selftest_missing_camera_file_fails_clearly(tmp_path: Path) -> None:
    result = emocall("selftest", "--source", str(tmp_path / "gone.mp4"))
    assert result.returncode == 1
    assert "gone.mp4 does not exist" in result.stdout


def test_run_serves_status_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = 18000 + os.getpid() % 1000
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance.cli",
            "run",
            "--data-dir",
            str(tmp_path),
            "--port",
            str(port),
            "--source",
            "pattern",
            "--name",
            "Asha",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        status = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as r:
                    status = json.load(r)
                break
            except OSError:
                time.sleep(0.1)
        assert status is not None, "the unit never answered"
        assert status["name"] == "Asha"
        assert status["camera"] == "pattern"
        web = selftest.check_web(config.load(None, {"web": {"port": port}}, environ={}))
        assert web.ok and web.detail == f"Asha answers on port {port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "Asha is ready" in err
    gone = selftest.check_web(config.load(None, {"web": {"port": port}}, environ={}))
    assert not gone.ok and gone.detail.startswith(f"no unit answers on port {port}")


def test_a_unit_listening_on_one_lan_address_still_answers_its_command_line(tmp_path: Path) -> None:
    """With `[web] host` one LAN address the unit does not listen on loopback, where `emocall call`
    and the self-test asked it ("no unit answers"); asked there, it took them for the LAN's."""
    host = host_address()
    if host.startswith("127."):
        pytest.skip("this machine has no LAN address")
    cfg = appliance_config(tmp_path / "asha", "Asha", web={"host": host})
    unit = Appliance(cfg).start()
    try:
        web = selftest.check_web(cfg)
        assert web.ok and web.detail.startswith("Asha answers"), web
        assert "events" in selftest.running_unit(cfg)  # the unit's own status, not the LAN's
        assert local.ask(cfg.web.port, "/api/hangup", {}, local.unit_host(host))["state"] == "idle"
    finally:
        unit.close()


@pytest.mark.parametrize("listening", ["0.0.0.0", "192.0.2.7"])
def test_only_loopback_and_the_one_address_listened_on_are_the_units_own(listening: str) -> None:
    """A request that came through the relay has 0.0.0.0 for its remote address, which is also what
    a unit listening on every address (the default) listens on: never the unit's own."""
    app = Flask(__name__)
    app.config[owner.LISTENING] = listening  # as appliance/app.py sets it from the web server
    own = {"127.0.0.1": True, "0.0.0.0": False, "192.0.2.7": listening == "192.0.2.7", "192.0.2.8": False}
    for remote, is_own in own.items():
        with app.test_request_context("/api/call", environ_base={"REMOTE_ADDR": remote}):
            assert owner.is_local() is is_own, remote


def test_the_selftest_asks_a_unit_that_never_answers_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit that takes the connection and never answers (hung) cost the timeout once for each
    part that asked it (web, button, relay: four asks); the self-test asks once and says so for each."""
    monkeypatch.setattr(local, "TIMEOUT_SECONDS", 1.0)
    hung = socket.create_server(("127.0.0.1", 0))
    port = hung.getsockname()[1]
    (tmp_path / "relay.password").write_text("secret\n")
    settings = {
        "unit": {"data_dir": str(tmp_path / "unit")},
        "camera": {"source": "pattern"},
        "web": {"port": port},
        "button": {"enabled": True},
        "relay": {"jid": "asha@relay.example", "password_file": str(tmp_path / "relay.password")},
    }
    asked: list[socket.socket] = []
    try:
        reports = {r.part: r for r in selftest.run(config.load(None, settings, environ={}))}
        hung.settimeout(0.5)
        asked.append(hung.accept()[0])  # the one connection the self-test made
        with pytest.raises(TimeoutError):
            asked.append(hung.accept()[0])
    finally:
        for conn in asked:
            conn.close()
        hung.close()
    assert not reports["web"].ok and "timed out" in reports["web"].detail
    assert reports["relay"].detail.startswith("settings readable; no unit answers")
    assert reports["camera"].ok, reports["camera"]  # no call holds it: opened here


def test_say_speaks_a_phrase_in_the_language_of_the_units_settings(tmp_path: Path) -> None:
    """The setup hotspot says its sentences through `emocall say`: a phrase and its fields, in the
    language the owner chose (here Hindi), as the unit itself would say them."""
    data = tmp_path / "unit"
    store = StateStore(data / STATE_FILE, EventBus(), {"display_name": "Kitchen"})
    store.update_settings({"voice_language": "hi"})
    store.close()
    phrase, text = tmp_path / "phrase.wav", tmp_path / "text.wav"
    phrase_args = ["--phrase", "network_joined", "--field", "ssid=Home", "--data-dir", str(data)]
    said = emocall("say", *phrase_args, "--wav", str(phrase))
    assert said.returncode == 0, said.stderr
    # A unit of its own (new, so at the default volume as the first one), not the machine's default
    # data folder, whose stored volume is whatever ran there last.
    fresh = ("--data-dir", str(tmp_path / "fresh"))
    hindi = emocall("say", "यूनिट नेटवर्क Home से जुड़ गई।", "--lang", "hi", *fresh, "--wav", str(text))
    assert hindi.returncode == 0, hindi.stderr
    assert np.array_equal(np.trim_zeros(read_wav(phrase)[0]), np.trim_zeros(read_wav(text)[0]))
    wrong = emocall("say", "--phrase", "hotspot_help", "--field", "ssid=Home", "--data-dir", str(data))
    assert wrong.returncode == 1 and "needs --field password=" in wrong.stderr


def test_say_plays_at_the_volume_the_unit_plays_at_before_the_owner_sets_one(tmp_path: Path) -> None:
    """A unit whose owner never moved the volume plays at the settings' default (80); `emocall say`
    (the hotspot's help, "cannot start") played the same unit's sentences at 100."""
    speech = config.load(None, {"speech": {"output": "wav"}}, environ={}).speech
    played = {}
    for name, volumes in (("untouched", ()), ("moved and back", (70, 80))):
        data = tmp_path / name
        store = StateStore(data / STATE_FILE, EventBus(), {"display_name": "Kitchen"})
        for volume in volumes:
            store.update_settings({"volume": volume})
        store.close()
        say_once("Camera ready.", "en", speech, data)
        played[name] = rms(read_wav(data / "speaker.wav")[0])
    assert played["untouched"] == pytest.approx(played["moved and back"], rel=0.01)


def test_watch_uses_the_configured_camera_unless_told_another() -> None:
    """`emocall watch` passed --source auto whenever none was given, so the configured webcam or
    file was replaced by the Pi camera."""
    assert cli._overrides(cli.parser().parse_args(["watch"])) == {}
    given = cli._overrides(cli.parser().parse_args(["watch", "--source", "/dev/video2"]))
    assert given == {"camera": {"source": "opencv", "device": "/dev/video2"}}
