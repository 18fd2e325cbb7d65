"""The `emocall` command."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance import __version__, config

if TYPE_CHECKING:
    from appliance.words.phrases import Phrases

log = logging.getLogger("emocall")
# The sample clips that come with the development checkout (../shared), for `emocall demo`.
DEMO_CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"

Handler = Callable[[argparse.Namespace, config.Config], int]


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Command-line flags as config overrides (only the ones given)."""
    flags = {
        ("unit", "data_dir"): getattr(args, "data_dir", None),
        ("unit", "name"): getattr(args, "name", None),
        ("web", "port"): getattr(args, "port", None),
    }
    out: dict[str, dict[str, Any]] = {}
    for (section, key), value in flags.items():
        if value is not None:
            out.setdefault(section, {})[key] = value
    source = getattr(args, "source", None)
    if source is not None:
        camera = out.setdefault("camera", {})
        if source in ("auto", "picamera2", "opencv", "pattern"):
            camera["source"] = source
        elif source.startswith("/dev/video") or source.isdigit():
            camera.update(source="opencv", device=source)
        else:
            camera.update(source="file", file=source)
    return out


def cmd_run(args: argparse.Namespace, cfg: config.Config) -> int:
    # Imported here, not at the top: `emocall say`, `call` or `config` never load the call, vision
    # and display libraries (about 150 MB).
    from appliance.app import Appliance
    from appliance.identity import IdentityError
    from appliance.privacy import PrivacyError
    from appliance.relay import RelayError
    from appliance.service import ServiceManager
    from appliance.state import StateError
    from appliance.web.server import WebServerError

    # What stops the unit starting (again, after "forget everything") has a message for a person.
    cannot_start = (WebServerError, RelayError, IdentityError, StateError, PrivacyError)

    # Whatever the unit writes (recordings, snapshots, logs, state) is for its own user alone.
    os.umask(0o077)
    service = ServiceManager.from_environment()  # systemd's readiness and watchdog, when it runs us
    appliance = Appliance(cfg, config.file_read(args.config))
    appliance.stop_on_signals()
    try:
        try:
            appliance.start()
        except Exception as e:  # any failure to start is said: a traceback alone is silence
            if isinstance(e, cannot_start):
                raise
            log.exception("the unit cannot start")
            say_cannot_start(cfg)
            return 1
        service.ready(f"{cfg.unit.name} is ready")
        if (said := cannot_start_mark()) is not None:
            said.unlink(missing_ok=True)  # a later failure in this boot is said again
        appliance.wait(lambda: service.watchdog(appliance.responsive))
    except cannot_start as e:  # at the start, or at a start again after "forget everything"
        log.error("%s", e)
        say_cannot_start(cfg)
        return 1
    finally:
        service.stopping()
        appliance.close()
    return 0


def say_cannot_start(cfg: config.Config) -> None:
    """A unit that cannot start says so, once per boot: systemd starts it again every few seconds,
    and without this the owner hears nothing at all. The mark is kept in the service's runtime
    directory (``RUNTIME_DIRECTORY``, kept across restarts, gone at the next boot)."""
    from appliance.audio import AudioError
    from appliance.speech import SpeechError
    from appliance.speech.service import say_once

    said = cannot_start_mark()
    if said is not None and said.exists():
        return
    phrases = unit_phrases(cfg)
    try:
        say_once(phrases.say("cannot_start"), phrases.voice, cfg.speech, cfg.unit.data_dir)
    except (AudioError, SpeechError, OSError) as e:
        log.warning("could not say that the unit cannot start: %s", e)
        return  # tried again at the next start
    if said is not None:
        said.touch()


def unit_phrases(cfg: config.Config, voice: str | None = None) -> Phrases:
    """The sentences in ``voice``, by default in the owner's language as stored (read without
    starting the unit: it may be the unit that cannot start, or the root hotspot script asking)."""
    from appliance.state import STATE_FILE, stored_language
    from appliance.words.phrases import Phrases

    return Phrases.for_voice(voice or stored_language(cfg.unit.data_dir / STATE_FILE))


def without_the_file(args: argparse.Namespace) -> config.Config:
    """The configuration when its file cannot be used: the environment and the flags (the data
    folder and its owner's language, the speaker), or the defaults where those are wrong too."""
    try:
        return config.load(Path(os.devnull), _overrides(args))  # an empty file, not the device's
    except config.ConfigError:
        return config.Config()


def cannot_start_mark() -> Path | None:
    """Where "said that it cannot start" is marked: the service's runtime directory; None outside
    systemd (no ``RUNTIME_DIRECTORY``), where every failed start says it."""
    from appliance.service import runtime_directory

    runtime = runtime_directory()
    return runtime / "cannot-start-said" if runtime else None


def cmd_selftest(args: argparse.Namespace, cfg: config.Config) -> int:
    from appliance import selftest

    reports = selftest.run(cfg, ask_unit=getattr(args, "source", None) is None)
    if args.json:
        print(json.dumps({"version": __version__, "parts": [r.as_dict() for r in reports]}, indent=1))
    else:
        for r in reports:
            print(f"{'ok ' if r.ok else 'NO '} {r.part:<8} {r.backend:<16} {r.detail}")
    return 0 if all(r.ok for r in reports if r.part == "camera") else 1


def spoken(args: argparse.Namespace, cfg: config.Config) -> tuple[str, str]:
    """What `emocall say` says, and the espeak-ng voice: the text given (in ``--lang``, English by
    default), or a phrase with its fields in the unit's language (the owner's setting, as
    ``say_cannot_start`` reads it), so the setup hotspot speaks the owner's language too."""
    from appliance.words import WordsError
    from appliance.words.phrases import EN

    if args.phrase is None:
        return args.text, args.lang or "en"
    if args.phrase not in EN:
        raise WordsError(f"no phrase {args.phrase!r}: see appliance/words/phrases.py")
    phrases = unit_phrases(cfg, args.lang)
    try:
        return phrases.say(args.phrase, **dict(args.field)), phrases.voice
    except KeyError as e:
        raise WordsError(f"phrase {args.phrase!r} needs --field {e.args[0]}=...") from e


def field(text: str) -> tuple[str, str]:
    """A ``--field NAME=VALUE`` of `emocall say`."""
    name, equals, value = text.partition("=")
    if not (name and equals):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def cmd_say(args: argparse.Namespace, cfg: config.Config) -> int:
    from appliance.audio import AudioError
    from appliance.speech import SpeechError
    from appliance.speech.service import say_once
    from appliance.words import WordsError

    speech = cfg.speech
    if args.wav is not None:
        speech = speech.model_copy(update={"output": "wav", "wav_file": args.wav})
    try:
        seconds = say_once(*spoken(args, cfg), speech, cfg.unit.data_dir)
    except (SpeechError, AudioError, WordsError) as e:
        print(f"emocall: {e}", file=sys.stderr)
        return 1
    print(f"said {seconds:.2f} s of speech" + (f" into {args.wav}" if args.wav else ""))
    return 0


def cmd_demo(args: argparse.Namespace, cfg: config.Config) -> int:
    from appliance.call import demo

    return demo.run(args.a_source, args.b_source, args.seconds, args.data_dir)


def cmd_call(args: argparse.Namespace, cfg: config.Config) -> int:
    from appliance.call.local import LocalUnitError, ask, unit_host

    target = getattr(args, "target", None)
    path, payload = ("/api/call", {"to": target}) if target else ("/api/hangup", {})
    try:
        answer = ask(cfg.web.port, path, payload, unit_host(cfg.web.host))
    except LocalUnitError as e:
        print(f"emocall: {e}", file=sys.stderr)
        return 1
    print(f"{answer.get('state', '?')} {answer.get('peer', '')}".strip())
    return 0


def cmd_config(args: argparse.Namespace, cfg: config.Config) -> int:
    print(config.defaults_toml() if args.defaults else json.dumps(cfg.model_dump(mode="json"), indent=1))
    return 0


def cmd_watch(args: argparse.Namespace, cfg: config.Config) -> int:
    from appliance.vision import watch

    return watch.run(cfg, args.json, sys.stdout, sys.stderr)


def cmd_restore(args: argparse.Namespace, cfg: config.Config) -> int:
    from appliance.backup import BackupError, restore

    if unit_running(cfg):  # it would go on with its old key, writing to the files the restore replaces
        where = f"its service, or something on port {cfg.web.port}"
        print(
            f"emocall: the unit is running ({where}): stop it first (sudo systemctl stop emocall)",
            file=sys.stderr,
        )
        return 1
    target = args.config or config.DEVICE_CONFIG
    try:
        archive = args.backup.read_bytes()
    except OSError as e:
        print(f"emocall: cannot read the backup {args.backup}: {e.strerror}", file=sys.stderr)
        return 1
    try:
        restored = restore(archive, cfg.unit.data_dir, target, replace=args.replace)
    except OSError as e:
        # The data folder is the service user's (mode 0700): root restores (first boot does).
        hint = " (run it with sudo)" if isinstance(e, PermissionError) else ""
        print(f"emocall: cannot restore into {cfg.unit.data_dir}: {e.strerror}{hint}", file=sys.stderr)
        return 1
    except BackupError as e:
        print(f"emocall: {e}", file=sys.stderr)
        return 1
    made = f"unit {restored.unit_id}, backed up {restored.made}"
    print(f"restored {restored.name} ({made}) into {cfg.unit.data_dir}")
    if restored.left_out:
        print(
            f"emocall: the backup had settings this release does not take, now at their defaults: "
            f"{', '.join(restored.left_out)}",
            file=sys.stderr,
        )
    return 0


def unit_running(cfg: config.Config) -> bool:
    """Whether a unit runs on this machine: its systemd service is active, or something takes
    connections where its web server listens (any answer counts: a unit with a failing card answers
    503)."""
    systemctl = shutil.which("systemctl")
    if (
        systemctl
        and subprocess.run([systemctl, "is-active", "--quiet", "emocall"], check=False).returncode == 0
    ):
        return True
    from appliance.call.local import unit_host

    try:
        with socket.create_connection((unit_host(cfg.web.host), cfg.web.port), timeout=2):
            return True
    except OSError:
        return False


def say_arguments(say: argparse.ArgumentParser) -> None:
    said = say.add_mutually_exclusive_group(required=True)
    said.add_argument("text", nargs="?", help="what to say")
    said.add_argument("--phrase", help="a sentence of appliance/words/phrases.py, in the unit's language")
    say.add_argument("--field", type=field, action="append", default=[], help="NAME=VALUE of --phrase")
    voice_help = "espeak-ng voice: en, hi, bn, en-gb... (default: en, or the unit's language for --phrase)"
    say.add_argument("--lang", help=voice_help)
    say.add_argument("--wav", type=Path, help="write the speaker's output to this WAV file instead")
    say.add_argument("--data-dir", type=Path, help="where state lives")
    say.set_defaults(handler=cmd_say)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emocall", description="A video phone that speaks facial expressions.")
    p.add_argument("--version", action="version", version=f"emocall {__version__}")
    config_help = "configuration file (default /etc/emocall/config.toml)"
    p.add_argument("--config", type=Path, help=config_help)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument(
        "--debug",
        action="append",
        default=[],
        metavar="LOGGER",
        help="log debug messages of this part only, e.g. appliance.events (names and expressions!)",
    )
    # --config after the command too (`emocall run --config F`); SUPPRESS keeps one given before it.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
    sub = p.add_subparsers(dest="command", required=True)
    command = functools.partial(sub.add_parser, parents=[after])

    run = command("run", help="run the appliance service")
    run.add_argument("--data-dir", type=Path, help="where state lives")
    run.add_argument("--port", type=int, help="port of the local web page")
    run.add_argument("--source", help="camera: auto, picamera2, opencv, pattern, /dev/videoN or a file")
    run.add_argument("--name", help="this unit's display name")
    run.set_defaults(handler=cmd_run)

    test = command("selftest", help="check each part and say which backend is active")
    test.add_argument("--json", action="store_true", help="machine-readable output")
    test.add_argument("--source", help="camera to check (as for run)")
    test.set_defaults(handler=cmd_selftest)

    say_arguments(command("say", help="speak a phrase through the speaker (or into a WAV file)"))

    call = command("call", help="ask the running unit to call a paired unit")
    call.add_argument("target", help="the paired unit's name, unit id or address")
    call.add_argument("--port", type=int, help="port of the running unit's local API")
    call.set_defaults(handler=cmd_call)
    hangup = command("hangup", help="ask the running unit to end its call")
    hangup.add_argument("--port", type=int, help="port of the running unit's local API")
    hangup.set_defaults(handler=cmd_call)
    demo = command("demo", help="two units on this machine call each other and say what happens")
    clip_a, clip_b = DEMO_CLIPS / "WolfgangLanger_Pexels.mp4", DEMO_CLIPS / "single_face.mp4"
    demo.add_argument("--a-source", default=str(clip_a), help="unit A's camera (a file or pattern)")
    demo.add_argument("--b-source", default=str(clip_b), help="unit B's camera (a file or pattern)")
    demo.add_argument("--seconds", type=float, default=20.0, help="how long the call lasts")
    demo.add_argument("--data-dir", type=Path, help="both units' state (default: a new temp dir)")
    demo.set_defaults(handler=cmd_demo)

    watch = command("watch", help="run the camera and expression recognition alone, a line per event")
    watch.add_argument("--source", help="camera (as for run; default: the config) or a video file")
    watch.add_argument("--json", action="store_true", help="JSON lines: t, emotion, confidence")
    watch.set_defaults(handler=cmd_watch)

    back = command("restore", help="put a backup from the settings page back (the unit stopped)")
    back.add_argument("backup", type=Path, help="the backup file (emocall-backup.tar)")
    back.add_argument("--replace", action="store_true", help="over another identity in the data folder")
    back.set_defaults(handler=cmd_restore)

    cfg = command("config", help="print the effective configuration")
    cfg.add_argument("--defaults", action="store_true", help="print every field, its default and description")
    cfg.set_defaults(handler=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # aioice's INFO lines list the other unit's addresses for every call: a call party.
        logging.getLogger("aioice").setLevel(logging.WARNING)
    # slixmpp's debug lines are every stanza whole: a guest's request carries its invite (a standing
    # one rings the unit for a year). Only where asked for by name: `--debug slixmpp`.
    logging.getLogger("slixmpp").setLevel(logging.INFO)
    for name in args.debug:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        cfg = config.load(args.config, _overrides(args))
    except config.ConfigError as e:
        print(f"emocall: {e}", file=sys.stderr)
        if args.command == "run":  # the service: systemd starts it again and again, unheard
            say_cannot_start(without_the_file(args))
        return 2
    handler: Handler = args.handler
    return handler(args, cfg)


if __name__ == "__main__":
    sys.exit(main())
