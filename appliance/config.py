"""Typed configuration: one TOML file, defaults and a description for every field, env overrides.

The file is ``/etc/emocall/config.toml`` on the device (``--config PATH`` anywhere). Environment
variables ``EMOCALL_<SECTION>__<FIELD>`` override it, for tests and one-off runs, e.g.
``EMOCALL_CAMERA__SOURCE=pattern``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from appliance.relay.address import bare_jid
from appliance.state import DisplayName, describe, what_is_wrong

DEVICE_CONFIG = Path("/etc/emocall/config.toml")
TOML_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # written escaped in a TOML string
ENV_PREFIX = "EMOCALL_"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file, the key and what is expected."""


def _unset_if_empty(value: Any) -> Any:
    # TOML has no null: an empty string is how the file and the environment say "not set", where
    # pydantic would make it Path("."), the working directory.
    return None if value == "" else value


def _needed(value: Any) -> Any:
    if value == "":
        raise ValueError("a path is needed here")
    return value


OptionalPath = Annotated[Path | None, BeforeValidator(_unset_if_empty)]
RequiredPath = Annotated[Path, BeforeValidator(_needed)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class UnitConfig(_Section):
    name: DisplayName = Field("emocall", description="Display name the other unit says")
    data_dir: RequiredPath = Field(
        Path("/var/lib/emocall"), description="Where state (identity, pairings) lives"
    )


CameraKind = Literal["auto", "picamera2", "opencv", "file", "pattern"]


class CameraConfig(_Section):
    source: CameraKind = Field("auto", description="auto tries picamera2, then a webcam, then the pattern")
    device: str = Field("0", description="Webcam index or device path for the opencv source")
    file: OptionalPath = Field(None, description="Video or image file for the file source")
    loop: bool = Field(True, description="Start the file again when it ends")
    width: int = Field(640, ge=64, le=1920, description="Frame width in pixels")
    height: int = Field(480, ge=48, le=1080, description="Frame height in pixels")
    fps: float = Field(15.0, gt=0, le=60, description="Frames per second to capture")
    retry_seconds: float = Field(
        3.0,
        gt=0,
        le=60,
        description="First wait before reopening a lost camera (then twice as long, up to 30 s)",
    )


class WebConfig(_Section):
    host: str = Field(
        "0.0.0.0",  # noqa: S104
        description="IPv4 address or host name the local web page and API listen on (0.0.0.0: every one)",
    )
    port: int = Field(8080, ge=1, le=65535, description="Port of the local web page and API")
    discovery: bool = Field(True, description="Advertise this unit and look for others with mDNS")
    code_seconds: float = Field(120.0, gt=0, le=600, description="How long a pairing or owner code is valid")
    max_wrong_codes: int = Field(5, ge=1, le=20, description="Wrong codes before codes are refused a while")
    lock_seconds: float = Field(300.0, gt=0, le=3600, description="How long codes are refused after that")
    session_hours: float = Field(
        12.0, gt=0, le=720, description="How long a browser stays the owner after typing the unit's code"
    )

    @field_validator("host")
    @classmethod
    def _ipv4(cls, host: str) -> str:
        # The unit is found and reached over IPv4 (mDNS announces IPv4 addresses, and waitress
        # listens on "::" for IPv6 alone): an IPv6 address left it unreachable, or stopped it.
        if ":" in host:
            raise ValueError("an IPv4 address or a host name (0.0.0.0 for every address), not IPv6")
        return host


SpokenEvents = Literal["quiet", "normal", "verbose"]
AudioOutKind = Literal["auto", "alsa", "wav", "none"]


class SpeechConfig(_Section):
    """Voice, language and announcement mode are owner settings (the settings page), not config."""

    rate_wpm: int = Field(160, ge=80, le=450, description="Speaking rate in words per minute")
    events: SpokenEvents = Field(
        "normal",
        description="Events spoken: quiet (calls, pairing, expressions), normal (+ camera, Coral), "
        "verbose (+ own face)",
    )
    min_confidence: float = Field(
        0.6, ge=0, le=1, description="Expressions below this confidence are not said"
    )
    min_interval_seconds: float = Field(
        5.0, ge=0, le=120, description="At most one expression announcement per this many seconds"
    )
    stale_seconds: float = Field(
        10.0, gt=0, le=30, description="An expression kept waiting this long after it was due is dropped"
    )
    output: AudioOutKind = Field(
        "auto",
        description="Speaker: alsa (the system's audio server), wav (a file: tests, demo), none, "
        "auto (alsa, waiting for a sound card while there is none; never a file)",
    )
    device: str = Field("default", description="ALSA device for output = alsa")
    wav_file: OptionalPath = Field(None, description="File for output = wav; empty: speaker.wav in data_dir")
    wav_max_minutes: float = Field(
        60.0,
        gt=0,
        le=740,  # a WAV header counts at most 4 GiB: 745 minutes of the speaker's 16-bit 48 kHz mono
        description="The WAV file starts again from empty after this many minutes",
    )
    duck_gain: float = Field(0.25, ge=0, le=1, description="Call audio level while an announcement plays")


DisplayKind = Literal["auto", "kmsdrm", "offscreen", "off"]


class DisplayConfig(_Section):
    backend: DisplayKind = Field(
        "auto",
        description="kmsdrm (the Pi's screen, no desktop), offscreen (PNG snapshots: tests, demo), off, "
        "auto (kmsdrm if a DRM device, else off; never files)",
    )
    width: int = Field(800, ge=160, le=3840, description="Width in pixels (kmsdrm uses the screen's own)")
    height: int = Field(480, ge=120, le=2160, description="Height in pixels (kmsdrm uses the screen's own)")
    fps: float = Field(10.0, gt=0, le=30, description="Redraws per second")
    snapshot_file: OptionalPath = Field(
        None, description="PNG the offscreen display writes; empty: display.png in data_dir"
    )
    snapshot_seconds: float = Field(1.0, ge=0, le=60, description="How often to write the PNG; 0: never")
    font: OptionalPath = Field(
        None,
        description="TrueType font for the language's letters; empty: fontconfig's font for the language "
        "(the built-in one for English)",
    )


class ButtonConfig(_Section):
    enabled: bool = Field(True, description="Use the call button (if it cannot be opened, the unit says so)")
    pin: int = Field(17, ge=0, le=27, description="BCM GPIO pin of the button (wired to ground)")
    hold_seconds: float = Field(1.5, gt=0, le=10, description="A press this long hangs up")
    choice_seconds: float = Field(
        2.0, gt=0, le=10, description="With several paired units: wait after the last press before calling"
    )


CallCodec = Literal["VP8", "H264"]
AudioInKind = Literal["auto", "microphone", "wav", "none"]


GUEST_HEARTBEAT_SECONDS = 1.0  # HEARTBEAT_MS in relay/guest/guest.js


class CallConfig(_Section):
    ring_seconds: float = Field(30.0, gt=0, le=120, description="How long an unanswered call rings")
    width: int = Field(640, ge=64, le=1920, description="Width of the video sent in a call")
    height: int = Field(480, ge=48, le=1080, description="Height of the video sent in a call")
    fps: float = Field(15.0, gt=0, le=30, description="Frames per second sent in a call")
    codec: CallCodec = Field("VP8", description="Video codec offered first")
    audio_in: AudioInKind = Field(
        "auto", description="Call audio source: auto (microphone if there is one), microphone, wav, none"
    )
    audio_file: OptionalPath = Field(None, description="WAV file sent as call audio for audio_in = wav")
    ice_servers: str = Field(
        "", description="Comma-separated STUN/TURN URLs; empty uses host candidates on the LAN only"
    )
    heartbeat_seconds: float = Field(1.0, gt=0, le=10, description="How often each unit says it is alive")
    peer_timeout_seconds: float = Field(
        4.0, gt=0, le=60, description="Silence after which the other side counts as lost (2+ heartbeats)"
    )
    reconnect_seconds: float = Field(
        30.0, ge=0, le=300, description="How long a lost call keeps trying before giving up"
    )

    @field_validator("peer_timeout_seconds")
    @classmethod
    def _outlasts_heartbeats(cls, timeout: float, info: ValidationInfo) -> float:
        # Shorter than two heartbeats, a quiet call would be counted lost between them: the other
        # unit's (units of one release share these settings) or a guest's page's, one a second.
        heartbeat = info.data.get("heartbeat_seconds")
        if isinstance(heartbeat, float) and timeout < 2 * max(heartbeat, GUEST_HEARTBEAT_SECONDS):
            raise ValueError(
                f"at least twice heartbeat_seconds ({heartbeat:g} s) and at least"
                f" {2 * GUEST_HEARTBEAT_SECONDS:g} s (a guest's page beats each second),"
                " or calls end between heartbeats"
            )
        return timeout


class RelayConfig(_Section):
    jid: str = Field(
        "",
        description="This unit's account on a relay (ACCOUNT@HOST, as `relay/unit add` printed it); empty: "
        "no relay, calls stay in the home and no STUN/TURN server is ever asked",
    )
    password_file: RequiredPath = Field(
        Path("/etc/emocall/relay.password"), description="File holding the relay account's password alone"
    )
    server: str = Field(
        "",
        pattern=r"^$|^[A-Za-z0-9.-]+(:[0-9]{1,5})?$",
        description="HOST or HOST:PORT to connect to; empty: the host of jid, port 5222",
    )
    ca_file: OptionalPath = Field(
        None, description="CA certificates to trust for the relay's TLS; empty: the system's"
    )
    unreachable_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Seconds out of the relay's reach before the unit says calls outside the home fail",
    )
    retry_max_seconds: float = Field(
        30.0, gt=0, le=600, description="Longest wait between two attempts to reach the relay"
    )
    request_seconds: float = Field(
        10.0, gt=0, le=60, description="How long a request through the relay waits for its answer"
    )

    @field_validator("jid")
    @classmethod
    def _account(cls, jid: str) -> str:
        # Checked as slixmpp checks it (one it refuses failed every connection, silently) and its
        # host lower-cased as slixmpp writes senders' (else guests.Relay.Test's guests pass for units).
        return bare_jid(jid) if jid else jid


DetectorKind = Literal["haar", "edgetpu"]
ClassifierKind = Literal["auto", "edgetpu", "cpu"]


class VisionConfig(_Section):
    enabled: bool = Field(True, description="Recognise the user's expression (off: calls run without it)")
    detector: DetectorKind = Field("haar", description="Face detector: haar (processor) or edgetpu (Coral)")
    detector_model: RequiredPath = Field(
        Path("/usr/share/emocall/models/ssd_mobilenet_v2_face_quant_postprocess_edgetpu.tflite"),
        description="Coral's SSD face model for detector = edgetpu (install it from Coral's test_data)",
    )
    classifier: ClassifierKind = Field(
        "auto", description="Expression classifier: auto tries the Edge TPU, then the processor"
    )
    threads: int = Field(1, ge=1, le=8, description="Processor threads for the expression classifier")
    model_card: OptionalPath = Field(
        None, description="Model card emotion.json; empty: the one shipped with emocall"
    )
    analyse_fps: float = Field(
        10.0, gt=0, le=60, description="Frames per second analysed (always the newest)"
    )
    detect_every: int = Field(
        10, ge=1, le=100, description="Search the whole frame every N analysed frames, near the face between"
    )
    min_face: float = Field(
        0.2, gt=0, lt=1, description="Smallest face looked for, as a fraction of the frame height"
    )
    # smoothing_seconds, threshold, hysteresis, dwell_seconds: benchmarks/tune_smoothing.py on PublicTest
    # faces (README, "Seeing").
    smoothing_seconds: float = Field(
        0.1, ge=0, le=5, description="Time constant of the moving average of expression probabilities"
    )
    threshold: float = Field(0.45, ge=0, le=1, description="Averaged probability a new expression needs")
    hysteresis: float = Field(
        0.2, ge=0, le=1, description="How far a new expression must lead the current one"
    )
    dwell_seconds: float = Field(
        0.2, ge=0, le=5, description="How long a new expression must lead before it is announced"
    )
    settle_seconds: float = Field(
        1.0, ge=0, le=10, description="How long the first expression of a face just come into view must lead"
    )
    no_face_seconds: float = Field(1.0, gt=0, le=30, description="Time without a face before 'no face'")


class Config(_Section):
    unit: UnitConfig = Field(default_factory=UnitConfig, description="This unit")
    camera: CameraConfig = Field(default_factory=CameraConfig, description="Camera source")
    vision: VisionConfig = Field(default_factory=VisionConfig, description="Expression recognition")
    web: WebConfig = Field(default_factory=WebConfig, description="Local web page and API")
    speech: SpeechConfig = Field(default_factory=SpeechConfig, description="What the unit says and how")
    display: DisplayConfig = Field(default_factory=DisplayConfig, description="The large-type screen")
    button: ButtonConfig = Field(default_factory=ButtonConfig, description="The call button")
    call: CallConfig = Field(default_factory=CallConfig, description="Calls between units")
    relay: RelayConfig = Field(default_factory=RelayConfig, description="Calls between homes, via a relay")


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and "__" in key:
            section, _, field = key[len(ENV_PREFIX) :].lower().partition("__")
            out.setdefault(section, {})[field] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, fields in extra.items():
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"[{section}] must be a table of settings")
        target.update(fields)
    return merged


def _describe(
    e: ValidationError,
    file: str,
    env: Mapping[str, Mapping[str, Any]],
    flags: Mapping[str, Mapping[str, Any]],
) -> str:
    """One line per bad key, each naming where its value came from: a flag, a variable or the file."""
    lines = ["invalid configuration"]
    for err in e.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc)
        section, field = [*loc, ""][:2]
        if field in flags.get(section, {}):
            source = "command line"
        elif field in env.get(section, {}):
            source = f"environment variable {ENV_PREFIX}{section.upper()}__{field.upper()}"
        elif not field and section in env:  # a section the file does not know: a misspelled variable
            names = (f"{ENV_PREFIX}{section.upper()}__{name.upper()}" for name in env[section])
            source = f"environment variable {', '.join(names)}"
        else:
            source = file
        if err["type"] == "extra_forbidden":
            lines.append(
                f"  {key}: unknown key in {source} (`emocall config --defaults` lists the known ones)"
            )
        else:
            lines.append(f"  {key}: {what_is_wrong(err)} (got {err.get('input')!r} from {source})")
    return "\n".join(lines)


def file_read(path: Path | None) -> Path | None:
    """The file :func:`load` reads for ``path``: itself, or else the device's where there is one."""
    return DEVICE_CONFIG if path is None and DEVICE_CONFIG.exists() else path


def load(
    path: Path | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read the file (if any), then the environment, then ``overrides`` (command-line flags)."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    origin = "defaults"
    path = file_read(path)
    if path is not None:
        origin = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the configuration file ({e.strerror})") from e
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from e
    env = _env_overrides(environ)
    try:
        data = _merge(_merge(data, env), overrides or {})
    except ConfigError as e:  # a key of the file where a [section] belongs
        raise ConfigError(f"{origin}: {e}") from e
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, origin, env, overrides or {})) from e


def salvage(text: str, origin: str) -> tuple[Config, str, list[str]]:
    """A configuration file another release wrote, read as far as this release can: each key it does
    not know, or whose value it refuses, is left out (its default applies) and named. Returns the
    configuration, the file to write (``text`` itself when nothing was left out) and the keys left
    out; ConfigError for a file that is not TOML."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{origin}: not valid TOML: {e}") from e
    left_out: list[str] = []
    while True:
        try:
            restored = Config.model_validate(data)
            break
        except ValidationError as e:
            left_out += _leave_out(data, e)
    if not left_out:
        return restored, text, []
    # Quoted: a key's name in the file can hold anything a TOML string can, line breaks too.
    lines = [f"# Written by emocall restore; left out, not taken by this release: {_toml_value(left_out)}"]
    for section, fields in data.items():  # what is left are this release's own names
        lines += ["", f"[{section}]", *(f"{k} = {_toml_value(v)}" for k, v in fields.items())]
    written = "\n".join(lines) + "\n"
    if Config.model_validate(tomllib.loads(written)) != restored:
        raise ConfigError(f"{origin}: cannot be written back as this release reads it")
    return restored, written, left_out


def _leave_out(data: dict[str, Any], e: ValidationError) -> list[str]:
    """Take the keys ``e`` refuses out of ``data``: a key by its section and name, or a whole entry
    of the file that is not a section of settings."""
    gone: list[str] = []
    for loc in dict.fromkeys(tuple(str(p) for p in err["loc"][:2]) for err in e.errors()):
        table = data.get(loc[0])
        if len(loc) == 2 and isinstance(table, dict) and loc[1] in table:
            del table[loc[1]]
        elif len(loc) == 1 and loc[0] in data:
            del data[loc[0]]
        else:  # every field has a default: an error with nothing to take out is not this file's
            raise ConfigError(f"invalid configuration: {describe(e)}") from e
        gone.append(".".join(loc))
    return gone


def defaults_toml() -> str:
    """The default configuration as commented TOML: every field with its description."""
    lines: list[str] = []
    for section, info in Config.model_fields.items():
        model = info.default_factory() if info.default_factory else None  # type: ignore[call-arg]
        assert isinstance(model, BaseModel)
        lines += ["", f"# {info.description}", f"[{section}]"]
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            lines.append(f"# {field.description}")
            lines.append(f"{'# ' if value is None else ''}{name} = {_toml_value(value)}")
    return "\n".join(lines).lstrip() + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return '""'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + TOML_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + '"'
