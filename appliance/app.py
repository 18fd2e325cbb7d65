"""The composition root: config, then backends, then services, in one readable order.

Everything started is registered on one ExitStack, so shutdown (SIGTERM/SIGINT) and every failure
path close it in reverse order. "Forget everything" (settings page, button) closes it all the same
way, erases what the unit wrote and starts again as a new unit (:meth:`Appliance.forget_everything`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from appliance.backup import make_backup
from appliance.call.endpoints import create_blueprint
from appliance.call.engine import CallEngine, tune_malloc
from appliance.camera import select
from appliance.camera.capture import Capture
from appliance.card import check_mounted, memory_copy, read_only
from appliance.config import Config
from appliance.controls.button import CallButton, start_button
from appliance.controls.privacy import PrivacyGestures
from appliance.display.select import open_display
from appliance.display.view import Display
from appliance.events import EventBus
from appliance.guests.service import Guests
from appliance.identity import KEY_FILE, Identity, IdentityError, KeyDamaged
from appliance.pairing.discovery import DiscoveryError
from appliance.pairing.service import PairingError
from appliance.privacy import CallGate, erase, forget_later, forget_pending
from appliance.relay.service import Relay
from appliance.service import restarted_after_fault, runtime_directory
from appliance.speech.service import Speech
from appliance.state import (
    STATE_FILE,
    Repair,
    StateDamaged,
    StateError,
    StateStore,
    damaged_name,
    drop_old_damaged,
    repair,
    repair_cut_short,
)
from appliance.vision.worker import VisionWorker
from appliance.web.address import unit_address
from appliance.web.api import create_app
from appliance.web.owner import LISTENING
from appliance.web.parts import UnitParts, build_parts
from appliance.web.server import WebServer
from appliance.web.wifi import wifi_blueprint

log = logging.getLogger(__name__)

# How long "forget everything" waits for the unit to finish saying so before it closes the speaker.
FORGET_SAY_SECONDS = 15.0
# How long the call engine's event loop may take to answer before the watchdog is no longer fed.
RESPONSE_SECONDS = 5.0
# How long "forget everything" may take (saying so, unpairing, closing, erasing, starting again with
# a Coral that may take PROBE_SECONDS twice) before the watchdog is no longer fed: as long as
# systemd gives the unit's first start (TimeoutStartSec). A restart stuck longer is killed, and the
# next start finishes the erase (forget-pending).
FORGET_SECONDS = 300.0
# How often the unit looks whether its address changed: a unit started before it had a network (the
# setup hotspot at first boot) or given a new address by the router shows, says and advertises it.
ADDRESS_SECONDS = 10.0
# How often ended guest invites past their keeping are deleted while the unit runs: it may run for
# months without a restart, and nobody may open the guests' page meanwhile (appliance/guests).
PRUNE_SECONDS = 3600.0


def outside_sandbox(data_dir: Path) -> None:
    """Raise StateError for a data folder the service may not write: under systemd the unit writes
    only its state folder (``STATE_DIRECTORY``, emocall.service), and any other folder reads as
    read-only, which would pass for a dying memory card (the unit would run from a copy and ask for
    a new card)."""
    allowed = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if allowed and not data_dir.resolve().is_relative_to(Path(allowed).resolve()):
        raise StateError(
            f"[unit] data_dir {data_dir} is outside {allowed}, the only folder the service may write: "
            f"leave [unit] data_dir out, or set it inside {allowed}"
        )


class Appliance:
    def __init__(self, config: Config, config_file: Path | None = None) -> None:
        """``config_file``: the file ``config`` was read from, which a backup keeps."""
        self.config = config
        self.config_file = config_file
        self.events = EventBus()
        self._stack = ExitStack()
        self._stopped = threading.Event()  # wait() returns: a signal, stop() or forget-everything
        self._stopping = threading.Event()  # a signal or stop(): nothing starts again after it
        self._forget = threading.Event()
        self._restarting = threading.Event()  # set while "forget everything" closes and restarts
        self._parts: UnitParts | None = None
        self.capture: Capture | None = None
        self.vision: VisionWorker | None = None
        self.web: WebServer | None = None
        self.store: StateStore | None = None
        self.speech: Speech | None = None
        self.display: Display | None = None
        self.button: CallButton | None = None
        self.call: CallEngine | None = None
        self.relay: Relay | None = None
        self._card_copy = False  # running on a copy of a read-only card's data (appliance.card)
        self._address = ""  # the address last shown and said
        self._address_due = 0.0  # when to look again (time.monotonic())
        self._guests: Guests | None = None
        self._prune_due = 0.0  # when to prune the invites next (time.monotonic())
        self._repaired: Repair | None = None  # the state database was damaged and made anew

    def start(self) -> Appliance:
        """Start every part; on any failure close what already started and re-raise."""
        tune_malloc()  # before any thread starts
        with self._stack as stack:
            cfg = self.config = self._open_data_dir()
            self.identity = self._open_identity(cfg.unit.data_dir / KEY_FILE)
            defaults = {"display_name": cfg.unit.name}
            self.store = self._open_store(cfg.unit.data_dir / STATE_FILE, defaults)
            stack.callback(self.store.close)
            # Before the camera, so the start-up sentence hears what the camera and vision report.
            settings = self.store.settings().model_dump()
            card = cfg.vision.model_card
            self.speech = Speech(cfg.speech, self.events, cfg.unit.data_dir, settings, card)
            stack.callback(self.speech.close)
            self.display = open_display(cfg.display, self.events, cfg.unit.data_dir, settings, card)
            if self.display is not None:
                stack.callback(self.display.close)
            self.capture = Capture(
                select.opener(cfg.camera),
                self.events,
                retry_seconds=cfg.camera.retry_seconds,
                width=cfg.camera.width,
                height=cfg.camera.height,
                fps=cfg.camera.fps,
            ).start()
            stack.callback(self.capture.close)
            guests = self._guests = stack.enter_context(
                Guests(cfg.vision, cfg.relay.jid, self.identity, self.store, self.events)
            )
            # None without [relay] jid: calls stay in the home and no STUN/TURN server is asked.
            self.relay = relay = Relay.open(cfg.relay, self.identity, self.store, self.events)
            self.call = CallEngine(
                cfg.call,
                self.identity,
                peers=self.store.peers,
                settings=self.store.settings,
                capture=self.capture,
                events=self.events,
                speaker=self.speech.speaker,
                # Display off: the call goes on unseen. A guest's face is analysed here (appliance/guests).
                on_remote_frame=guests.tap(self.display.set_remote_frame if self.display else None),
                dialer=relay.dialer if relay else None,
                ice_servers=relay.ice_servers if relay else None,
                renamed=self.store.rename_peer,
            ).start()
            stack.callback(self.call.close)
            parts = build_parts(
                cfg.web,
                self.identity,
                self.store,
                self.events,
                call=self.call,
                forget=self.forget_everything,
                backup=self._backup,
                client=relay.peer_client if relay else None,
                routes=relay.routes_to if relay else None,
            )
            self._parts = parts
            stack.callback(parts.close)
            store = self.store
            self.button = start_button(
                cfg.button,
                self.call,
                self.speech.announcer,
                store.peers,
                self.say_address,
                events=self.events,
                privacy=PrivacyGestures(
                    self.speech.announcer,
                    sharing=lambda: store.settings().share_expressions,
                    set_sharing=lambda on: store.update_settings({"share_expressions": on}),
                    forget=self.forget_everything,
                ),
                presence=parts.presence,
            )
            if self.button is not None:
                stack.callback(self.button.close)
            # After the parts, so speech and the call hear which backend runs (or that none can).
            self.vision = VisionWorker.open(cfg.vision, self.capture, self.events, paused=True).start()
            stack.callback(self.vision.close)
            current = self.store.settings
            gate = CallGate(
                self.events, self.vision, lambda: current().share_expressions, camera=self.capture
            )
            stack.callback(gate.close)
            blueprints = [
                create_blueprint(self.call),
                wifi_blueprint(cfg.unit.data_dir),
                *guests.blueprints(self.call, self._relay_status),
            ]
            app = create_app(self.status, parts, blueprints + ([relay.blueprint()] if relay else []))
            self.web = WebServer(app, cfg.web.host, cfg.web.port).start()
            app.config[LISTENING] = self.web.host
            stack.callback(self.web.close)
            parts.serve_on(self.web.port)
            if relay:
                # On the call engine's loop: one loop owns the call and its signalling.
                relay.start(self.call.loop, app)
                stack.callback(relay.close)
            self._stack = stack.pop_all()
        self._announce_start(cfg, self.store)
        return self

    def _open_identity(self, path: Path) -> Identity:
        """The unit's key; a damaged one (a failing card) set aside as ``identity.key.damaged-<UTC
        time>`` and a new identity made, said at the start (:meth:`_announce_start`), rather than a
        unit that no longer starts and needs someone with SSH."""
        try:
            return Identity.load_or_create(path)
        except KeyDamaged as e:
            aside = damaged_name(path)
            try:
                os.replace(path, aside)
            except OSError as moving:
                raise IdentityError(f"{e}; it cannot be moved: {moving.strerror}") from moving
            log.error(
                "the identity key %s held no key: set aside as %s, and a new identity made", path, aside.name
            )
            return Identity.load_or_create(path)

    def _open_store(self, path: Path, defaults: dict[str, Any]) -> StateStore:
        """The state database; a damaged one (a failing card) made anew of what still reads, said
        at the start (:meth:`_announce_start`), rather than a unit that no longer starts and needs
        someone with SSH."""
        try:
            if not repair_cut_short(path):
                return StateStore(path, self.events, defaults)
            log.error("the repair of the state database %s was cut short: repairing it again", path)
        except StateDamaged as e:
            log.error("%s: repairing it", e)
        self._repaired = repair(path)
        return StateStore(path, self.events, defaults)

    def _announce_identity(self, store: StateStore) -> None:
        """A key that is not the one the state belonged to (damaged and made anew, or a key that
        still reads but changed on a failing card, or one put there by hand): paired units pinned
        the old one and refuse this unit, and the guests' links were signed with it. Recorded only
        once said, so a start that fails after the key changed says it at the next. Not on a
        read-only card: each start there makes another key in memory, and the owner hears to have
        the card replaced rather than to pair again for nothing."""
        unit_id, before = self.identity.unit_id, store.meta("unit_id")
        if before == unit_id:
            return  # the usual start: nothing to say, nothing written to the card
        if before is not None and not self._card_copy:
            message = f"the identity changed from {before} to {unit_id}: paired units refuse it"
            self.events.publish("unit.identity_changed", message, peers=[p.name for p in store.peers()])
        store.remember_identity(unit_id)

    def _announce_start(self, cfg: Config, store: StateStore) -> None:
        """What the owner hears as the unit comes up: a fault before it, a failing card, ready."""
        fault = restarted_after_fault(runtime_directory())
        if fault is not None:
            self.events.publish("unit.restarted", f"restarted after a fault ({fault})", reason=fault)
        if (repaired := self._repaired) is not None:
            self._repaired = None  # said once, not again after "forget everything"
            message = f"the state database was damaged: {repaired.rows} rows read back"
            peers = list(repaired.peers)
            self.events.publish("unit.state_repaired", message, rows=repaired.rows, peers=peers)
        self._announce_identity(store)
        if self._card_copy:
            message = "the memory card is read-only: running on a copy in memory, changes are not kept"
            self.events.publish("unit.card_read_only", message, data_dir=str(cfg.unit.data_dir))
        # Until the owner answers, expressions are not shared, and the start-up sentence asks.
        ask = not (store.sharing_answered() or store.settings().share_expressions)
        self._address = self.address()
        name = store.settings().display_name  # the owner's name for the unit; [unit] name only seeds it
        self.events.publish(
            "unit.ready",
            f"{name} is ready",
            name=name,
            address=self._address,
            ask_sharing=ask,
            button=self.button is not None,
        )

    def _follow_address(self) -> None:
        """Show and advertise a new address (see ADDRESS_SECONDS); not said, as the hotspot's voice
        says at that moment what happened (the button says the address). Loopback is never one: it
        only means the network is gone for now, and nobody can reach the unit there."""
        now = time.monotonic()
        if now < self._address_due:
            return
        self._address_due = now + ADDRESS_SECONDS
        address = self.address()
        if address == self._address or address.startswith("127."):
            return
        self._address = address
        log.info("this unit's address is now %s", address)
        self.events.publish("unit.address_changed", "The unit's address changed", address=address)
        discovery = self._parts.discovery if self._parts else None
        if discovery is not None:
            try:
                discovery.restart()
            except DiscoveryError as e:
                log.warning("%s", e)

    def responsive(self) -> bool:
        """Whether the parts that can hang still answer (systemd's watchdog is pinged only then).
        While "forget everything" closes the parts and makes them anew there is none to ask (the
        restart has its own limit, FORGET_SECONDS)."""
        if self._restarting.is_set():
            return True
        return self.call is None or self.call.responsive(RESPONSE_SECONDS)

    def address(self) -> str:
        """Where another unit reaches this one (shown on the display, said on request)."""
        return unit_address(self.config.web.host, self.web.port if self.web else self.config.web.port)

    def say_address(self) -> None:
        self.events.publish("unit.address", "The unit's address was asked for", address=self.address())

    def status(self) -> dict[str, Any]:
        return {
            "name": self.store.settings().display_name if self.store else self.config.unit.name,
            "address": self.address(),
            "camera": self.capture.active if self.capture else "none",
            "vision": self.vision.status() if self.vision else {"available": False, "reason": "not started"},
            "call": self.call.state if self.call else "unavailable",
            "button": self.button is not None,  # for `emocall selftest`: the unit holds the pin
            "relay": self._relay_status(),
            "events": [{"topic": e.topic, "message": e.message} for e in self.events.recent()[-10:]],
        }

    def _relay_status(self) -> dict[str, Any]:
        return self.relay.status() if self.relay else {"state": "off"}

    def stop_on_signals(self) -> None:
        """SIGTERM/SIGINT end :meth:`wait`; installed before start() so an early signal is not lost."""

        def on_signal(signum: int, _: FrameType | None) -> None:
            log.info("signal %d: shutting down", signum)
            self.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)

    def wait(self, tick: Callable[[], None] = lambda: None) -> None:
        """Block until a signal (see :meth:`stop_on_signals`) or :meth:`stop`, calling ``tick`` each second.

        A :meth:`forget_everything` meanwhile restarts the unit, fresh, and waits on.
        """
        while True:
            while not self._stopped.wait(1.0):
                tick()
                self._follow_address()
                self._prune()
            if not self._forget.is_set() or self._stopping.is_set():
                return
            self._start_fresh(tick)
            if self._stopping.is_set():
                return

    def _prune(self) -> None:
        """Hourly: ended invites, and damaged state and key files kept past their time
        (``drop_old_damaged``)."""
        now = time.monotonic()
        if self._guests is None or self.store is None or now < self._prune_due:
            return
        self._prune_due = now + PRUNE_SECONDS
        try:
            self._guests.invites.prune()
        except StateError as e:  # the card: said by the store; the next hour tries again
            log.warning("could not delete ended invites: %s", e)
        drop_old_damaged(self.store.path)
        drop_old_damaged(self.config.unit.data_dir / KEY_FILE)

    def _backup(self) -> bytes:
        assert self.store is not None  # the pages that ask run only once the unit started
        cfg = self.config
        name = self.store.settings().display_name
        return make_backup(cfg.unit.data_dir, name, self.config_file, cfg.relay.password_file)

    def forget_everything(self) -> bool:
        """Erase pairings, settings, identity, recordings, snapshots and logs; start again as new.

        Safe from any thread (the web page, the button): the unit says what it does now, and
        :meth:`wait` does it once the request that asked has been answered. True when the memory
        card cannot be written: only the copy in memory is erased, and the card brings it all back
        at the next start (the page says so, as the unit does).
        """
        forget_later(self.config.unit.data_dir)
        self.events.publish("unit.forgetting", "forgetting everything this unit stored")
        self._forget.set()
        self._stopped.set()
        return self._card_copy

    def _start_fresh(self, tick: Callable[[], None]) -> None:
        """Forget everything and start again. Its steps (telling several switched-off units, a
        hung Coral's probe at the start) take longer than the watchdog waits, and none of them can
        stop to call ``tick``: a thread of its own does."""
        self._forget.clear()
        self._stopped.clear()
        with self._restarting_fed(tick):
            # Stopped meanwhile (SIGTERM: systemd waits 90 s, a reboot less): the paired units are
            # still told and the erase done, but nothing starts again.
            if self.speech is not None:  # "Forgetting everything...", heard unless stopped
                until = time.monotonic() + FORGET_SAY_SECONDS
                while not (self._stopping.is_set() or self.speech.announcer.wait_idle(0.2)):
                    if time.monotonic() > until:
                        break
            self._unpair_all()  # even when stopping: nothing could tell the paired units later
            self.close()
            self._erase(self.config)
            if self._stopping.is_set():
                return
            self.events = EventBus()
            self.start()
        # On a read-only card only the copy in memory was erased: the card brings it all back at the
        # next boot, and the owner must hear that it does.
        kept = " but the read-only memory card still holds it" if self._card_copy else ""
        self.events.publish(
            "unit.forgotten",
            f"everything was erased{kept}: this unit starts as new",
            card_kept=self._card_copy,
        )

    @contextmanager
    def _restarting_fed(self, tick: Callable[[], None]) -> Iterator[None]:
        """``tick`` every second in a thread while the block runs, for at most FORGET_SECONDS."""
        self._restarting.set()
        done = threading.Event()

        def feed() -> None:
            until = time.monotonic() + FORGET_SECONDS
            while not done.wait(1.0) and time.monotonic() < until:
                tick()

        feeder = threading.Thread(target=feed, name="watchdog-feed", daemon=True)
        feeder.start()
        try:
            yield
        finally:
            done.set()
            feeder.join()
            self._restarting.clear()

    def _open_data_dir(self) -> Config:
        """The configuration to run with: the data folder on a read-only card is swapped for its
        copy in memory (:mod:`appliance.card`)."""
        cfg = self.config
        if not self._card_copy:  # after forget-everything on a read-only card: its copy, in memory
            outside_sandbox(cfg.unit.data_dir)
            check_mounted(cfg.unit.data_dir)
        if read_only(cfg.unit.data_dir):
            copy = memory_copy(cfg.unit.data_dir, runtime_directory())
            cfg = cfg.model_copy(update={"unit": cfg.unit.model_copy(update={"data_dir": copy})})
            self._card_copy = True
        try:
            cfg.unit.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StateError(f"cannot create the data folder {cfg.unit.data_dir}: {e.strerror}") from e
        if forget_pending(cfg.unit.data_dir):  # the last "forget everything" was cut short: finish it
            self._erase(cfg)
        return cfg

    def _erase(self, cfg: Config) -> None:
        snapshot = cfg.display.snapshot_file
        erase(
            cfg.unit.data_dir,
            [cfg.speech.wav_file, snapshot, snapshot.with_suffix(".txt") if snapshot else None],
        )

    def _unpair_all(self) -> None:
        """Tell each paired unit to forget this one too, where it answers (the trust goes either way)."""
        if self.store is None or self._parts is None:
            return
        for peer in self.store.peers():
            try:
                self._parts.pairing.unpair(peer.unit_id)
            except (PairingError, StateError) as e:  # a full card: erasing goes on all the same
                log.warning("unpairing before forgetting everything: %s", e)

    def stop(self) -> None:
        self._stopping.set()
        self._stopped.set()

    def close(self) -> None:
        self._stack.close()
