from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from appliance import config


def test_defaults_have_a_description_for_every_field() -> None:
    text = config.defaults_toml()
    parsed = tomllib.loads(text)
    assert parsed["camera"]["source"] == "auto"
    assert parsed["web"]["port"] == 8080
    for section in config.Config.model_fields.values():
        assert section.description
    assert "# Frames per second to capture" in text


def test_the_defaults_with_every_empty_setting_uncommented_are_the_defaults(tmp_path: Path) -> None:
    """An empty path means "not set" (the description's "empty: ..."), never the working directory."""
    text = config.defaults_toml()
    uncommented = re.sub(r'(?m)^# (\w+ = "")$', r"\1", text)
    assert uncommented.count('= ""') > 5
    path = tmp_path / "c.toml"
    path.write_text(uncommented)
    assert config.load(path, environ={}) == config.load(None, environ={})
    assert config.load(None, environ={"EMOCALL_RELAY__CA_FILE": ""}).relay.ca_file is None
    with pytest.raises(config.ConfigError, match=r"unit.data_dir: .*a path is needed"):
        config.load(None, {"unit": {"data_dir": ""}}, environ={})


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[unit]\nname = "Asha"\n[web]\nport = 9000\n[camera]\nfps = 10.0\n')
    env = {"EMOCALL_WEB__PORT": "9100", "EMOCALL_CAMERA__FPS": "12"}
    cfg = config.load(path, {"camera": {"fps": 5}}, environ=env)
    assert (cfg.unit.name, cfg.web.port, cfg.camera.fps) == ("Asha", 9100, 5.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[camera]\nsourc = 'file'\n", "camera.sourc: unknown key"),
        ("[web]\nport = 'eighty'\n", "web.port: Input should be a valid integer"),
        ("[camera]\nsource = 'kinect'\n", "camera.source: Input should be 'auto', 'picamera2'"),
        ("[web\n", "not valid TOML"),
        ("web = 3\n", "web: Input should be a valid dictionary"),
        # waitress listens on "::" for IPv6 alone, and the unit is found and called over IPv4: it
        # stopped in its mDNS announcement, or ran where nothing could reach it.
        ("[web]\nhost = '::'\n", "web.host: an IPv4 address or a host name (0.0.0.0 for every address)"),
        # One late heartbeat ended the call, and a guest's page counted the unit lost between them.
        (
            "[call]\nheartbeat_seconds = 5\npeer_timeout_seconds = 4\n",
            "call.peer_timeout_seconds: at least twice heartbeat_seconds (5 s)",
        ),
        (
            "[call]\nheartbeat_seconds = 0.4\npeer_timeout_seconds = 1\n",
            "call.peer_timeout_seconds: at least twice heartbeat_seconds (0.4 s) and at least 2 s",
        ),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as e:
        config.load(path, environ={})
    assert str(path) in str(e.value)
    assert expected in str(e.value)


def test_bad_config_exits_2_with_message_not_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[camera]\nfps = -3\n")
    result = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "--config", str(path), "selftest"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "camera.fps: Input should be greater than 0 (got -3 from " + str(path) in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_environment_variable_is_named_as_the_source_not_the_file(tmp_path: Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text("[web]\nport = 8080\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(path, environ={"EMOCALL_WEB__PORT": "abc"})
    assert "web.port: Input should be a valid integer" in str(e.value)
    assert "from environment variable EMOCALL_WEB__PORT" in str(e.value)
    assert str(path) not in str(e.value)


def test_a_misspelled_section_in_a_variable_or_a_key_for_a_section_says_where(tmp_path: Path) -> None:
    """A variable naming no section was blamed on the file; a file key where a section belongs
    was said without the file."""
    path = tmp_path / "good.toml"
    path.write_text("[web]\nport = 8080\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(path, environ={"EMOCALL_CAMREA__SOURCE": "pattern"})
    assert "camrea: unknown key in environment variable EMOCALL_CAMREA__SOURCE" in str(e.value)
    path.write_text('camera = "pattern"\n')
    with pytest.raises(config.ConfigError, match=rf"^{re.escape(str(path))}: \[camera\] must be a table"):
        config.load(path, environ={"EMOCALL_CAMERA__SOURCE": "pattern"})


def test_unreadable_config_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "--config", str(missing), "selftest"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{missing}: cannot read the configuration file" in result.stderr
