"""The Wi-Fi page the setup hotspot serves (appliance/web/wifi.py): the owner's choice is left for the
image's hotspot script, readable by the unit only; a bad name or password is refused and leaves nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.web.wifi import REQUEST_FILE, WifiError, leave_request, wifi_blueprint
from tests.pairing_units import make_unit


def test_the_owner_sets_the_network_and_the_request_is_private(tmp_path: Path) -> None:
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
        assert not (tmp_path / REQUEST_FILE).exists()
        good = browser.post("/wifi", data={"ssid": "Home net", "password": "correct horse"}, headers=csrf)
        assert good.status_code == 200 and b"joining Home net" in good.data
        request = tmp_path / REQUEST_FILE
        assert request.read_text() == "Home net\ncorrect horse\n"
        assert request.stat().st_mode & 0o777 == 0o600
    finally:
        unit.close()


@pytest.mark.parametrize(
    ("ssid", "password"), [("", ""), ("x" * 33, ""), ("a\nb", "password1"), ("Home", "x" * 64)]
)
def test_bad_input_is_refused_and_leaves_nothing(tmp_path: Path, ssid: str, password: str) -> None:
    with pytest.raises(WifiError):
        leave_request(tmp_path, ssid, password)
    assert list(tmp_path.iterdir()) == []


def test_an_open_network_needs_no_password(tmp_path: Path) -> None:
    assert leave_request(tmp_path, "Cafe", "").read_text() == "Cafe\n\n"
