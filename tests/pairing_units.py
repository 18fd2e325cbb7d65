"""Units for the pairing and web tests: real identity, state store, web app and HTTP server each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from appliance import config
from appliance.events import EventBus
from appliance.identity import Identity
from appliance.state import StateStore
from appliance.web.api import create_app
from appliance.web.parts import UnitParts, build_parts
from appliance.web.server import WebServer


@dataclass
class Unit:
    name: str
    events: EventBus
    me: Identity
    store: StateStore
    parts: UnitParts
    app: Flask
    server: WebServer

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def code(self, purpose: str) -> str:
        return str(
            next(
                e.data["code"]
                for e in reversed(self.events.recent("pairing.code"))
                if e.data["purpose"] == purpose
            )
        )

    def owner(self) -> tuple[FlaskClient, dict[str, str]]:
        """A browser session that typed the owner code; returns it and its CSRF header."""
        client = self.app.test_client()
        csrf = client.get("/api/owner").get_json()["csrf"]
        assert client.post("/api/owner/code", headers={"X-CSRF-Token": csrf}).status_code == 202
        r = client.post("/api/owner/login", json={"code": self.code("owner")}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.get_json()
        return client, {"X-CSRF-Token": r.get_json()["csrf"]}

    def close(self) -> None:
        self.server.close()
        self.parts.close()
        self.store.close()


def make_unit(tmp: Path, name: str, **web: Any) -> Unit:
    cfg = config.load(
        None,
        {"unit": {"name": name}, "web": {"host": "127.0.0.1", "port": 1, "discovery": False, **web}},
        environ={},
    )
    events = EventBus(history=200)
    me = Identity.load_or_create(tmp / name / "identity.key")
    store = StateStore(tmp / name / "state.db", events, {"display_name": name})
    parts = build_parts(cfg.web, me, store, events)
    recent = lambda: [{"topic": e.topic, "message": e.message} for e in events.recent()[-10:]]  # noqa: E731
    app = create_app(
        lambda: {"name": store.settings().display_name, "camera": "pattern", "events": recent()}, parts
    )
    server = WebServer(app, "127.0.0.1", 0).start()
    parts.serve_on(server.port)
    return Unit(name, events, me, store, parts, app, server)
