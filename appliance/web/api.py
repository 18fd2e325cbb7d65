"""The JSON API: the unit's status for the page, scripts and `emocall selftest`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue

from appliance import __version__

StatusProvider = Callable[[], dict[str, Any]]


def create_app(status: StatusProvider) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024

    @app.get("/api/status")
    def get_status() -> ResponseReturnValue:
        return jsonify({"version": __version__, **status()})

    @app.errorhandler(404)
    def not_found(_: Exception) -> ResponseReturnValue:
        return jsonify({"error": "not found"}), 404

    return app
