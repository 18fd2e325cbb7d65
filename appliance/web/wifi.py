"""The Wi-Fi page: the owner picks the network the unit joins (served on the setup hotspot too).

The web service runs unprivileged, so it does not touch NetworkManager itself: it leaves the choice
in ``DATA_DIR/wifi-request`` (mode 0600; the SSID, then the password, one per line; on a card gone
read-only, ``DATA_DIR`` is the unit's copy in memory, where the script looks too), and the image's
hotspot script (image-build/files/network/emocall-hotspot, root) hands it to NetworkManager, drops the
hotspot and says whether the unit joined. That script acts only while the unit has no network: a
choice made while it has one waits for the next start without one (after a move), and the page
says so.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue

from appliance.relay import routing
from appliance.web.page_access import owner_page
from appliance.web.wording import Outcome

REQUEST_FILE = "wifi-request"


class WifiError(ValueError):
    """A network name or password Wi-Fi would refuse; the message says what to type in ``field``."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def check(ssid: str, password: str) -> None:
    if not 1 <= len(ssid.encode()) <= 32:
        raise WifiError("Type the network's name (1 to 32 characters).", "ssid")
    for field, text in (("ssid", ssid), ("password", password)):
        # Line breaks would split the request file; NUL and other controls do not survive nmcli's
        # command line (a WPA passphrase is printable ASCII anyway).
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise WifiError("The name and password cannot contain line breaks or control characters.", field)
    if password and not 8 <= len(password) <= 63:
        raise WifiError(
            "A Wi-Fi password has 8 to 63 characters; leave it empty for an open network.", "password"
        )


def leave_request(data_dir: Path, ssid: str, password: str) -> Path:
    """Write the request atomically and readable by its owner only (it holds the password)."""
    check(ssid, password)
    path = data_dir / REQUEST_FILE
    part = path.with_suffix(".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{ssid}\n{password}\n")
    part.replace(path)
    return path


def wifi_blueprint(data_dir: Path) -> Blueprint:
    bp = Blueprint("wifi", __name__)

    @bp.get("/wifi")
    @owner_page
    def wifi_form() -> ResponseReturnValue:
        return render_template("wifi.html", outcome=None, ssid="")

    @bp.post("/wifi")
    @owner_page
    def wifi_post() -> ResponseReturnValue:
        ssid, password = request.form.get("ssid", ""), request.form.get("password", "")
        try:
            leave_request(data_dir, ssid, password)
        except WifiError as e:
            outcome = Outcome(str(e), "error", {e.field: str(e)})
            return render_template("wifi.html", outcome=outcome, ssid=ssid), 422
        said = f"The unit is joining {ssid}; it says whether that worked."
        if routing.online():  # the hotspot script's own test
            said = (
                f"Saved. The unit is on a network now and stays on it: it joins {ssid} the next time "
                "it starts without one (after a move, for example), and says whether that worked."
            )
        return render_template("wifi.html", outcome=Outcome(said), ssid=ssid)

    return bp
