"""The Wi-Fi page the setup hotspot serves (appliance/web/wifi.py): the owner's choice is left for the
image's hotspot script, readable by the unit only; a bad name or password is refused and leaves nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.relay import routing
from appliance.web.wifi import REQUEST_FILE, WifiError, leave_request, wifi_blueprint
from tests.pairing_units import make_unit

# /proc/net/route without and with a default route: on the setup hotspot, and on a network.
HEADER = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
HOTSPOT = HEADER + "wlan0\t00002A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
ONLINE = HEADER + "eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"


def test_the_owner_sets_the_network_and_the_request_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = tmp_path / "route"
    routes.write_text(HOTSPOT)
    monkeypatch.setattr(routing, "ROUTES", routes)
    unit = make_unit(tmp_path, "Asha")
    unit.app.register_blueprint(wifi_blueprint(tmp_path))
    try:
        visitor = unit.app.test_client()
        assert visitor.get("/wifi").headers["Location"].endswith("/login")
        browser, csrf = unit.owner()
        page = browser.get("/wifi")
        assert page.status_code == 200 and b'name="ssid"' in page.data
        bad = browser.post("/wifi", data={"ssid": "Home", "password": "short"}, headers=csrf)
        assert bad.status_code == 422 and b"8 to 63 characters" in bad.data
        # The screen reader is taken to the password, not to the name that was right.
        invalid = re.findall(r'<input id="(\w+)"[^>]*aria-invalid="true"', bad.get_data(as_text=True))
        assert invalid == ["password"]
        assert not (tmp_path / REQUEST_FILE).exists()
        good = browser.post("/wifi", data={"ssid": "Home net", "password": "correct horse"}, headers=csrf)
        assert good.status_code == 200 and b"joining Home net" in good.data
        request = tmp_path / REQUEST_FILE
        assert request.read_text() == "Home net\ncorrect horse\n"
        assert request.stat().st_mode & 0o777 == 0o600
        # On a network the hotspot script does not run: the page says when the choice is used.
        routes.write_text(ONLINE)
        later = browser.post("/wifi", data={"ssid": "New home", "password": "correct horse"}, headers=csrf)
        page = later.get_data(as_text=True)
        assert later.status_code == 200 and "joins New home the next time it starts without one" in page
        assert "is joining" not in page
    finally:
        unit.close()


@pytest.mark.parametrize(
    ("ssid", "password"),
    [("", ""), ("x" * 33, ""), ("a\nb", "password1"), ("Home", "x" * 64), ("Home", "pass\x00word")],
)
def test_bad_input_is_refused_and_leaves_nothing(tmp_path: Path, ssid: str, password: str) -> None:
    with pytest.raises(WifiError):
        leave_request(tmp_path, ssid, password)
    assert list(tmp_path.iterdir()) == []


def test_an_open_network_needs_no_password(tmp_path: Path) -> None:
    assert leave_request(tmp_path, "Cafe", "").read_text() == "Cafe\n\n"
