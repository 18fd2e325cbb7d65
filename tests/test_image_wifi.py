"""The Wi-Fi page the setup hotspot serves (appliance/web/wifi.py): the owner's choice is left for the
image's hotspot script, readable by the unit only; a bad name or password is refused and leaves nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.events import EventBus
from appliance.relay import routing
from appliance.state import STATE_FILE, StateStore
from appliance.web.wifi import REQUEST_FILE, WifiError, leave_request, wifi_blueprint
from appliance.words.phrases import Phrases
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


# The hotspot script (image-build/files/network/emocall-hotspot) drives NetworkManager and Wi-Fi,
# which this machine has not: it runs here with stand-ins for nmcli, ip, iw and runuser on PATH, each
# a few lines that log what was asked and play a home whose router starts late. runuser runs this
# checkout's `emocall say` (into a WAV file); its espeak-ng stand-in keeps the text it is given, which
# runuser adds to what was said when `emocall say` is done, and the whole of espeak-ng's speech.
HOTSPOT_SCRIPT = Path(__file__).resolve().parents[1] / "image-build/files/network/emocall-hotspot"
STAND_INS = {
    "ip": '[ -e "$HOME_NET/online" ] && echo "default via 192.168.1.1 dev wlan0"; exit 0',
    "iw": '[ -e "$HOME_NET/phone" ] && echo "Station 11:22:33:44:55:66 (on wlan0)"; exit 0',
    "nmcli": """echo "$*" >>"$HOME_NET/nmcli.log"
case "$*" in
  "-t -f DEVICE,TYPE device") echo "wlan0:wifi" ;;
  "-g connection.uuid connection show emocall-setup") echo setup-uuid ;;
  "-t -f UUID,TYPE connection show") echo setup-uuid:802-11-wireless; cat "$HOME_NET/saved" ;;
  "--wait 30 connection up home-uuid" | "--wait 60 connection up emocall-wifi-new")
    [ -e "$HOME_NET/router" ] && touch "$HOME_NET/online" || exit 4 ;;
  "connection up emocall-setup") [ ! -e "$HOME_NET/radio-broken" ] || exit 10 ;;
  "radio wifi on") rm -f "$HOME_NET/radio-off" ;;
  "device wifi hotspot "*)  # the radio on, and a Wi-Fi name of 32 bytes at most, as NetworkManager
    args="$*"; ssid=${args#* ssid }; ssid=${ssid% password *}
    [ ! -e "$HOME_NET/radio-off" ] && [ "${#ssid}" -le 32 ] || exit 10
    if [ -e "$HOME_NET/radio-waking" ]; then rm "$HOME_NET/radio-waking"; exit 10; fi ;;
esac""",
    "id": "echo 1000",
    "runuser": """echo "$*" >>"$HOME_NET/runuser.log"
while [ "$1" != say ]; do shift; done
shift
"$PYTHON" -m appliance.cli --config "$HOME_NET/config.toml" say "$@"
cat "$HOME_NET/saying" >>"$HOME_NET/said"  # once said, as runuser returns
""",
    "espeak-ng": """echo "$*" >>"$HOME_NET/espeak.log"
text=$(cat)
printf '%s\\n' "$text" >"$HOME_NET/saying"
"$ESPEAK" "$@" <<<"$text" >"$HOME_NET/spoken.wav"
head -c 4444 "$HOME_NET/spoken.wav"  # its first 0.1 s: the WAV speaker plays in real time
""",
    "sleep": "exec /bin/sleep 0.05",
}


class Hotspot:
    """The hotspot script with the stand-ins, in a home whose state the test changes by files."""

    def __init__(
        self,
        tmp_path: Path,
        saved: str,
        say_seconds: int = 120,
        hostname: Path = Path("/etc/hostname"),
        radio_off: bool = False,
        read_only: Path | None = None,
        card_copy: Path | None = None,
    ) -> None:
        bin_dir, self.net = tmp_path / "bin", tmp_path / "net"
        tmp_path.mkdir(exist_ok=True)
        bin_dir.mkdir()
        self.net.mkdir()
        stand_ins = dict(STAND_INS)
        if read_only:  # a file on a card gone read-only (root cannot remove it either)
            stand_ins["rm"] = (
                f'for a in "$@"; do [ "$a" != "{read_only}" ] || '
                '{ echo "rm: Read-only file system" >&2; exit 1; }; done\nexec /bin/rm "$@"'
            )
        for name, body in stand_ins.items():
            (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
            (bin_dir / name).chmod(0o755)
        (self.net / "saved").write_text(saved)
        (self.net / "config.toml").write_text(
            f'[unit]\ndata_dir = "{tmp_path}"\n[speech]\noutput = "wav"\nwav_file = "{self.net}/said.wav"\n'
        )
        (self.net / "phone").touch()  # the owner's phone is on the setup page
        if radio_off:  # and not ready at once when switched on
            (self.net / "radio-off").touch()
            (self.net / "radio-waking").touch()
        self.password = tmp_path / "password"
        env = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "HOME_NET": str(self.net),
            "EMOCALL_STATE_DIR": str(tmp_path),
            "EMOCALL_CARD_COPY": str(card_copy or tmp_path / "no-copy"),
            "EMOCALL_HOTSPOT_PASSWORD": str(self.password),
            "EMOCALL_HOTSPOT_WAIT": "0",
            "EMOCALL_HOTSPOT_RETRY": "0",
            "EMOCALL_HOTSPOT_SAY": str(say_seconds),
            "EMOCALL_HOSTNAME_FILE": str(hostname),
            "PYTHON": sys.executable,
            "ESPEAK": str(shutil.which("espeak-ng")),
        }
        self.script = subprocess.Popen(
            ["bash", str(HOTSPOT_SCRIPT)], env=env, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 10
        while not (self.net / "said").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # ten rounds of the loop with a phone on the hotspot

    def log(self) -> str:
        return (self.net / "nmcli.log").read_text()

    def said(self) -> list[str]:
        return (self.net / "said").read_text().splitlines()

    def close(self) -> None:
        self.script.kill()
        self.script.wait()


def test_the_hotspot_goes_back_to_the_saved_network_when_the_router_is_up(tmp_path: Path) -> None:
    """After a power cut the router starts after the unit gave up waiting: the hotspot opens, then
    the saved network is tried while no phone is on the hotspot, and joined once the router is up."""
    home = Hotspot(tmp_path, "home-uuid:802-11-wireless\n")
    try:
        password = home.password.read_text().strip()
        assert re.fullmatch(r"\d{8}", password) and home.password.stat().st_mode & 0o777 == 0o600
        assert "device wifi hotspot ifname wlan0 con-name emocall-setup ssid" in home.log()
        assert home.log().rstrip().endswith(f"password {password}")
        assert "connection down" not in home.log()  # not while someone is on the hotspot
        (home.net / "phone").unlink()
        time.sleep(0.5)  # saved network tried, router still off: the hotspot comes back
        assert "--wait 30 connection up home-uuid" in home.log()
        assert "connection up setup-uuid" not in home.log()
        (home.net / "router").touch()
        assert home.script.wait(timeout=10) == 0, home.script.stderr.read() if home.script.stderr else ""
    finally:
        home.close()
    assert home.said()[0].startswith("No network. Join the Wi-Fi network")
    assert home.said()[-1] == "The network is back."
    assert "connection up emocall-setup" in home.log()


def test_a_new_unit_keeps_its_hotspot_up_and_a_hotspot_that_cannot_return_is_not_announced(
    tmp_path: Path,
) -> None:
    """With no network saved there is nothing to try: the phone on the setup page keeps its
    network. A hotspot that does not come back ends the script (systemd starts it again) instead of
    the unit announcing a network that is not there."""
    new = Hotspot(tmp_path / "new", "")
    try:
        (new.net / "phone").unlink()
        time.sleep(0.5)
        assert "connection down" not in new.log() and new.script.poll() is None
    finally:
        new.close()
    home = Hotspot(tmp_path / "home", "home-uuid:802-11-wireless\n")
    try:
        (home.net / "radio-broken").touch()
        (home.net / "phone").unlink()
        assert home.script.wait(timeout=10) != 0
        assert len(home.said()) == 1  # said once, before the hotspot was lost
    finally:
        home.close()


def test_the_hotspot_says_again_only_while_no_phone_is_on_it(tmp_path: Path) -> None:
    """Its owner on the setup page may be hearing a login code from the unit, which this voice (a
    process of its own) would talk over: said when the hotspot opens, then again only while no
    phone is on it."""
    home = Hotspot(tmp_path, "", say_seconds=0)  # a new unit: no saved network to try
    try:
        time.sleep(3)
        assert len(home.said()) == 1
        (home.net / "phone").unlink()
        deadline = time.monotonic() + 30
        while len(home.said()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(home.said()) >= 2
    finally:
        home.close()


@pytest.mark.parametrize("router", ["up", "off"])
def test_the_network_chosen_on_the_setup_page_is_joined(tmp_path: Path, router: str) -> None:
    """The page leaves the owner's choice; the script hands it to NetworkManager and says whether the
    unit joined. A network that cannot be joined (a wrong password) brings the setup network back,
    and the choice is used once, not retried every round."""
    home = Hotspot(tmp_path, "")
    try:
        if router == "up":
            (home.net / "router").touch()
        leave_request(tmp_path, "Home net", "correct horse")
        if router == "up":
            assert home.script.wait(timeout=10) == 0, home.script.stderr.read() if home.script.stderr else ""
        else:
            deadline = time.monotonic() + 10
            while "Could not join" not in " ".join(home.said()) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
            assert home.script.poll() is None  # still on the setup network, for another try
    finally:
        home.close()
    log = home.log()
    assert "connection add type wifi con-name emocall-wifi-new ssid Home net wifi-sec.key-mgmt wpa-psk" in log
    assert log.count("connection up emocall-wifi-new") == 1
    assert not (tmp_path / REQUEST_FILE).exists()
    if router == "up":
        assert "connection modify emocall-wifi-new connection.id emocall-wifi" in log
        assert home.said()[-1] == "Joined the network Home net."
    else:
        assert home.said()[-1] == "Could not join Home net. Check the password. The setup network comes back."
        assert log.rstrip().splitlines()[-1] == "connection up emocall-setup"


def test_a_choice_that_does_not_work_leaves_the_network_saved_before(tmp_path: Path) -> None:
    """A choice made months ago (or a wrong password) replaced the network the unit had, Imager's
    `emocall-wifi` too: when it failed, nothing was left to go back to once the router was up, and the
    unit stayed on its hotspot for good. A request that is a link is not read (root would)."""
    (tmp_path / "secret").write_text("Root only\nx\n")
    (tmp_path / REQUEST_FILE).symlink_to(tmp_path / "secret")
    home = Hotspot(tmp_path, "home-uuid:802-11-wireless\n")
    try:
        leave_request(tmp_path, "Old flat", "correct horse")
        deadline = time.monotonic() + 10
        while "Could not join" not in " ".join(home.said()) and time.monotonic() < deadline:
            time.sleep(0.05)
        (home.net / "phone").unlink()
        (home.net / "router").touch()
        assert home.script.wait(timeout=10) == 0, home.script.stderr.read() if home.script.stderr else ""
    finally:
        home.close()
    log = home.log().splitlines()
    assert "connection delete emocall-wifi" not in log and "connection delete emocall-wifi-new" in log
    assert "--wait 30 connection up home-uuid" in log and home.said()[-1] == "The network is back."
    assert "Root only" not in " ".join(log)


@pytest.mark.parametrize("copied", [True, False], ids=["unit on its copy", "no copy yet"])
def test_on_a_card_gone_read_only_the_choice_is_read_from_the_units_copy_and_tried_once(
    tmp_path: Path, copied: bool
) -> None:
    """The unit runs on its copy of a read-only card (appliance/card.py), so the page leaves the
    choice there: the script looked on the card alone, and the unit never joined. A choice left on
    the card before it went read-only is in the copy too (tried once, from there); with no copy yet
    it cannot be removed from the card, and is tried once, not every round."""
    copy = tmp_path / "run" / "card-copy"
    copy.mkdir(parents=True)
    leave_request(tmp_path, "Old flat", "wrong horse")
    if copied:  # as the unit's start copies the card
        leave_request(copy, "Old flat", "wrong horse")
        (copy / ".copied").touch()
    home = Hotspot(tmp_path, "", read_only=tmp_path / REQUEST_FILE, card_copy=copy)
    try:
        deadline = time.monotonic() + 10
        while "Could not join" not in " ".join(home.said()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # ten more rounds of the loop
        assert home.log().count("connection up emocall-wifi-new") == 1
        if copied:
            (home.net / "router").touch()
            leave_request(copy, "Home net", "correct horse")
            assert home.script.wait(timeout=10) == 0, home.script.stderr.read() if home.script.stderr else ""
    finally:
        home.close()
    said = home.said()
    assert sum("Could not join Old flat" in line for line in said) == 1
    assert (tmp_path / REQUEST_FILE).exists()  # the card's, read-only
    if copied:
        assert home.log().count("connection up emocall-wifi-new") == 2 and not (copy / REQUEST_FILE).exists()
        assert said[-1] == "Joined the network Home net."


def test_the_hotspot_speaks_the_language_the_owner_chose(tmp_path: Path) -> None:
    """The hotspot said its sentences in English whatever the unit's language; it says them in the
    owner's (a phrase and its fields, through `emocall say` as the unit's user), the address's dots
    as the word for "dot" (the Hindi voice reads "10.42.0.1" as a decimal number)."""
    store = StateStore(tmp_path / STATE_FILE, EventBus(), {"display_name": "Kitchen"})
    store.update_settings({"voice_language": "hi"})
    store.close()
    home = Hotspot(tmp_path, "")
    try:
        (home.net / "router").touch()
        leave_request(tmp_path, "Home net", "correct horse")
        assert home.script.wait(timeout=20) == 0, home.script.stderr.read() if home.script.stderr else ""
    finally:
        home.close()
    hindi, ssid = Phrases("hi"), Path("/etc/hostname").read_text().strip().replace("-", " ")
    password = " ".join(home.password.read_text().strip())
    assert home.said() == [
        hindi.say("hotspot_help", ssid=ssid, password=password, host="10.42.0.1", port="8080"),
        "यूनिट नेटवर्क Home net से जुड़ गई।",
    ]
    assert "10 डॉट 42 डॉट 0 डॉट 1 पोर्ट 8080" in home.said()[0]
    assert all(" -v hi " in line for line in (home.net / "espeak.log").read_text().splitlines())
    assert (home.net / "spoken.wav").stat().st_size > 48_000  # a second of speech at least
    user = "-u emocall -- env XDG_RUNTIME_DIR=/run/user/1000 /opt/emocall/venv/bin/emocall"
    assert (home.net / "runuser.log").read_text().startswith(f"{user} --config /etc/emocall/config.toml say")


def test_the_hotspot_opens_with_a_long_unit_name_and_the_radio_off(tmp_path: Path) -> None:
    """Raspberry Pi OS leaves the radio off until a Wi-Fi country is set, and a host name may be 63
    letters where a Wi-Fi name holds 32: either way NetworkManager refused the hotspot, and systemd
    started the script again for ever, the unit silent. The name is cut to 32 and said as cut."""
    hostname = tmp_path / "hostname"
    hostname.write_text("kitchen-unit-of-the-family-in-kolkata-west\n")
    home = Hotspot(tmp_path, "", hostname=hostname, radio_off=True)
    try:
        assert home.script.poll() is None  # the hotspot is up, waiting for the owner's choice
    finally:
        home.close()
    ssid = "kitchen-unit-of-the-family-in-ko"
    log = home.log()
    assert f"ssid {ssid} password" in log and log.index("radio wifi on") < log.index("device wifi hotspot")
    assert home.said()[0].startswith(f"No network. Join the Wi-Fi network {ssid.replace('-', ' ')}")
