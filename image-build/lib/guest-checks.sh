#!/usr/bin/env bash
# Runs inside the booted image (as root, copied there by boot-test.sh): one line per check,
#   CHECK <name> <ok|fail> <detail>
# then the self-test JSON on a line of its own after "SELFTEST". Reads nothing from the host.
set -uo pipefail
venv=/opt/emocall/venv
uid=$(id -u emocall)
as_emocall() {
  (cd /var/lib/emocall && runuser -u emocall -- env XDG_RUNTIME_DIR="/run/user/$uid" "$@")
}
check() { printf 'CHECK %s %s %s\n' "$1" "$2" "$3"; }

service() {
  local props
  props=$(systemctl show emocall -p ActiveState -p SubState -p NRestarts -p ActiveEnterTimestampMonotonic |
    tr '\n' ' ')
  if systemctl is-active -q emocall; then check service ok "$props"; else check service fail "$props"; fi
}

# Issue 19.1/19.2: PipeWire in emocall's user manager; the echo canceller is the default source and sink.
pipewire() {
  local source sink
  source=$(as_emocall wpctl inspect @DEFAULT_AUDIO_SOURCE@ 2>&1 | sed -n 's/.*node.name = "\(.*\)"/\1/p')
  sink=$(as_emocall wpctl inspect @DEFAULT_AUDIO_SINK@ 2>&1 | sed -n 's/.*node.name = "\(.*\)"/\1/p')
  if [ "$source" = echo-cancel-source ] && [ "$sink" = echo-cancel-sink ]; then
    check pipewire ok "default source $source, default sink $sink"
  else
    check pipewire fail "default source '${source}', sink '${sink}'"
  fi
}

# The announcement path the service uses: emocall say -> aplay -D default -> PipeWire -> the card.
speaker() {
  local out
  if out=$(as_emocall "$venv/bin/emocall" --config /etc/emocall/config.toml say "Speaker check." 2>&1); then
    check speaker ok "$out"
  else
    check speaker fail "$(tail -1 <<<"$out")"
  fi
  if journalctl -u emocall -b --no-pager | grep -q "aplay"; then
    check service_audio fail "the service logged an aplay problem: $(journalctl -u emocall -b --no-pager | grep aplay | tail -1)"
  else
    check service_audio ok "no aplay error in the service's journal"
  fi
}

# The call's microphone: PortAudio opens ALSA's default (PipeWire's echo-cancel-source) as the
# service user. The VM's sound card has no input, so no sound is expected, only an open stream.
microphone() {
  local out logged
  out=$(as_emocall "$venv/bin/python" -c 'import time, sounddevice
from appliance.call.microphone import Microphone
mic = Microphone()
time.sleep(1)
print("opened", sounddevice.query_devices(kind="input")["name"], "for a second")
mic.close()' 2>&1)
  logged=$(journalctl -u emocall -b --no-pager | grep "no microphone support" | tail -1)
  if ! grep -q "^opened" <<<"$out"; then
    check microphone fail "$(tail -1 <<<"$out")"
  elif [ -n "$logged" ]; then
    check microphone fail "$out; but the service logged: $logged"
  else
    check microphone ok "$(tail -1 <<<"$out")"
  fi
}

# Issue 19.3: lgpio imports under the unit's own sandbox (it makes a FIFO in the working directory).
lgpio() {
  local out
  out=$(systemd-run --quiet --wait --pipe --collect -p User=emocall -p Group=emocall \
    -p SupplementaryGroups="gpio" -p RuntimeDirectory=emocall-lgpio-check \
    -p WorkingDirectory=/run/emocall-lgpio-check -p ProtectSystem=strict \
    -p ProtectHome=read-only -p PrivateTmp=yes -p NoNewPrivileges=yes -p ReadWritePaths=/var/lib/emocall \
    "$venv/bin/python" -c 'import lgpio, gpiozero.pins.lgpio as f, os
print("lgpio", lgpio.LGPIO_PY_VERSION if hasattr(lgpio, "LGPIO_PY_VERSION") else "", f.LGPIOFactory.__name__,
      [n for n in os.listdir(".") if n.startswith(".lgd")])' 2>&1)
  if grep -q LGPIOFactory <<<"$out"; then check lgpio ok "$out"; else check lgpio fail "$(tail -1 <<<"$out")"; fi
}

# The unit shows and says a code when a visitor of its page asks to become its owner.
ask_for_code() {
  "$venv/bin/python" -c 'import http.cookiejar, json, urllib.request
web = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
csrf = json.load(web.open("http://127.0.0.1:8080/api/owner", timeout=10))["csrf"]
ask = urllib.request.Request("http://127.0.0.1:8080/api/owner/code", b"", {"X-CSRF-Token": csrf})
print(web.open(ask, timeout=10).status)' 2>&1
}

# Issue 19.7: the service's own framebuffer is on the screen's primary plane (DRM's debugfs state
# names the process that made it); lib/scanout.py (copied to /tmp by boot-test.sh) saves what that
# framebuffer holds: the idle screen, then a code in large type once the page asked for one.
display() {
  local drm log owner shot code
  drm=$(find /dev/dri -mindepth 1 -printf '%f ' 2>/dev/null)
  log=$(journalctl -u emocall -b --no-pager | grep -i -E "display|screen|kmsdrm|sdl" | tail -2 | tr '\n' ' ')
  mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug 2>/dev/null
  owner=$(sed -n '/plane-0$/,/allocated by/s/.*allocated by = //p' /sys/kernel/debug/dri/0/state 2>/dev/null)
  if [ ! -e /dev/dri/card0 ]; then
    check display fail "no DRM device; $log"
  elif journalctl -u emocall -b --no-pager | grep -q "display.unavailable"; then
    check display fail "the service could not open the screen: $log"
  elif [ "$owner" != emocall ]; then
    check display fail "the primary plane shows a framebuffer of '${owner}', not the service's; $log"
  elif ! shot=$(PYGAME_HIDE_SUPPORT_PROMPT=1 "$venv/bin/python" /tmp/scanout.py /tmp/scanout.png 2>&1); then
    # Exit 2: read, but almost nothing drawn (scanout.py's MIN_DRAWN); else it could not be read.
    check display fail "primary plane: the service's framebuffer, but: $(tail -1 <<<"$shot"); $log"
  elif ! code=$(ask_for_code) || ! sleep 3 ||
    ! code=$(PYGAME_HIDE_SUPPORT_PROMPT=1 "$venv/bin/python" /tmp/scanout.py /tmp/scanout-code.png --large-yellow 2>&1); then
    check display fail "idle: $shot; after asking for a code: $(tail -1 <<<"$code"); $log"
  else
    check display ok "primary plane: the service's framebuffer; idle: $shot; a code asked for: $code; dri: $drm; $log"
  fi
}

# Issue 19.6: the Edge TPU probe runs in a child process; here (no Coral, no libedgetpu) it fails,
# the unit runs expressions on the processor and was never restarted.
coral() {
  local out restarts
  out=$(as_emocall "$venv/bin/python" -c 'from pathlib import Path
from appliance.vision.litert import InterpreterError, probe_edgetpu
try:
    probe_edgetpu(Path("/usr/share/emocall/models/edgetpu/emotion_int8.tflite"))
    print("probe passed")
except InterpreterError as e:
    print("probe failed:", e)' 2>&1 | tail -1)
  restarts=$(systemctl show emocall -p NRestarts --value)
  if grep -q "^probe failed" <<<"$out" && [ "$restarts" = 0 ]; then
    check coral ok "$out; the service never restarted (NRestarts=0)"
  else
    check coral fail "$out; NRestarts=$restarts"
  fi
}

vision() {
  local status
  status=$(python3 -c 'import json, urllib.request
s = json.load(urllib.request.urlopen("http://127.0.0.1:8080/api/status", timeout=10))
print(json.dumps(s.get("vision")))' 2>&1)
  if grep -q -i '"available": true' <<<"$status"; then check vision ok "$status"; else check vision fail "$status"; fi
}

# The clock saved hourly for the next boot (no cron on the image): the timer is waiting, and its
# service writes the time now to fake-hwclock's file.
clock() {
  local next saved
  next=$(systemctl show emocall-clock-save.timer -p ActiveState -p NextElapseUSecMonotonic --value | tr '\n' ' ')
  if systemctl start emocall-clock-save.service && saved=$(cat /etc/fake-hwclock.data) &&
    [ $(($(date +%s) - $(date -u -d "$saved" +%s))) -lt 60 ]; then
    check clock ok "timer: $next; saved $saved (UTC), now $(date -u '+%F %T')"
  else
    check clock fail "timer: $next; saved '${saved:-nothing}', now $(date -u '+%F %T')"
  fi
}

# What lives in memory stays small (a 1 GiB Pi), the state partition keeps 4 KiB blocks, and the
# root's folder under its mount point holds the mark a unit refuses to start on (appliance/card.py).
memory_mounts() {
  local tmp data mark=.state-partition-not-mounted under
  tmp=$(findmnt -no FSTYPE,OPTIONS /tmp)
  data=$(tune2fs -l "$(findmnt -no SOURCE /var/lib/emocall)" | sed -n 's/^Block size: *//p')
  mkdir -p /run/root-view && mount --bind / /run/root-view
  under=$(ls -A /run/root-view/var/lib/emocall)
  umount /run/root-view
  if grep -q '^tmpfs .*size=65536k' <<<"$tmp" && [ "$data" = 4096 ] && [ "$under" = "$mark" ] &&
    [ ! -e "/var/lib/emocall/$mark" ]; then
    check mounts ok "/tmp: $tmp; state partition block size $data; under its mount point: $under"
  else
    check mounts fail "/tmp: '$tmp'; state partition block size '$data'; under its mount point: '$under'"
  fi
}

# The owner's language as the settings page sets it, with the service stopped (the store is
# the service's); systemctl start returns at READY=1.
set_language() {
  systemctl stop emocall
  as_emocall "$venv/bin/python" -c 'import sys
from pathlib import Path
from appliance.state import StateStore
store = StateStore(Path("/var/lib/emocall/state.db"))
store.update_settings({"voice_language": sys.argv[1]})
store.close()' "$1" && systemctl start emocall
}

# The display in Bengali: the image's Lohit font found by fontconfig, drawn by the arm64 pygame
# (HarfBuzz shaping for the script) on the screen; boot-test.sh copies the picture out.
bengali() {
  local since shot warned
  since=$(date '+%Y-%m-%d %H:%M:%S')
  if ! set_language bn || ! sleep 5 ||
    ! shot=$(PYGAME_HIDE_SUPPORT_PROMPT=1 "$venv/bin/python" /tmp/scanout.py /tmp/scanout-bn.png 2>&1); then
    check bengali fail "the screen in Bengali: $(tail -1 <<<"$shot")"
  elif warned=$(journalctl -u emocall --since "$since" --no-pager | grep "no font has the letters"); then
    check bengali fail "$warned"
  else
    check bengali ok "the idle screen in Bengali, no font missing: $shot"
  fi
  set_language en || check bengali fail "the service did not start again in English"
}

# A name in each other Indian script, in Urdu, Hebrew, Sinhala, Thai and Burmese: the image's font for
# it (Lohit's, Amiri, DejaVu Sans, LKLUG, Loma, Padauk), found by fontconfig as the display asks (by its first
# letter); an Urdu name's first word drawn on the right of its second (shaped right to left); and a
# Telugu name said in the Telugu voice, as speech says it.
other_scripts() {
  local out
  out=$(as_emocall "$venv/bin/python" -c 'import cv2, numpy, pygame
from appliance.display.fonts import face_for, for_language
from appliance.speech.espeak import Espeak
from appliance.words.phrases import Phrases
faces = [face_for(letter) for letter in "\u0a17\u0a97\u0b32\u0b95\u0c30\u0c95\u0d06\u0639\u05e9\u0dc1\u0e19\u1000"]
print(*(f"{f.script}:{f.path.name}" if f and f.path else "none" for f in faces))
fonts = for_language(Phrases("en"), None)[0]
ink = lambda text: pygame.surfarray.pixels_red(fonts._line(text, 60, (255, 255, 255))).T.astype(numpy.float32)
name = ink("\u0639\u0627\u0626\u0634\u06c1 \u062e\u0627\u0646")
at = lambda word: cv2.minMaxLoc(cv2.matchTemplate(name, ink(word), cv2.TM_CCORR_NORMED))[3][0]
print("urdu first word on the right:", at("\u0639\u0627\u0626\u0634\u06c1") > at("\u062e\u0627\u0646"))
print(Espeak().phonemes("Calling \u0c30\u0c3e\u0c2e\u0c41."))' 2>&1)
  if grep -q "^Guru:Lohit-Gurmukhi.ttf Gujr:Lohit-Gujarati.ttf Orya:Lohit-Odia.ttf Taml:Lohit-Tamil.ttf Telu:Lohit-Telugu.ttf Knda:Lohit-Kannada.ttf Mlym:Lohit-Malayalam.ttf Arab:Amiri-Regular.ttf Hebr:DejaVuSans.ttf Sinh:lklug.ttf Thai:Loma.ttf Mymr:Padauk-Regular.ttf$" <<<"$out" &&
    grep -q "^urdu first word on the right: True$" <<<"$out" && grep -q "(te)r'a:mu(en)" <<<"$out"; then
    check other_scripts ok "$(tr '\n' ' ' <<<"$out")"
  else
    check other_scripts fail "$(tr '\n' ' ' <<<"$out")"
  fi
}

# The messages of the service's recent events (its status page's list), joined by " | ".
status_events() {
  python3 -c 'import json, urllib.request
s = json.load(urllib.request.urlopen("http://127.0.0.1:8080/api/status", timeout=10))
print(" | ".join(e["message"] for e in s["events"]))' 2>&1
}

# A crash on the read-only card (the service killed): systemd starts it again (RestartSec) and the
# new run says why the last one ended, which ExecStopPost left in the runtime directory (RAM).
restart() {
  local before after events="" i
  before=$(systemctl show emocall -p MainPID --value)
  systemctl kill -s SIGKILL emocall
  for i in $(seq 120); do
    after=$(systemctl show emocall -p MainPID --value)
    if [ "$after" != 0 ] && [ "$after" != "$before" ] && systemctl is-active -q emocall; then
      events=$(status_events) && break
    fi
    sleep 1
  done
  if grep -q "restarted after a fault (signal)" <<<"$events"; then
    check restart ok "killed, started again by systemd after ${i} s: $events"
  else
    check restart fail "$(systemctl show emocall -p ActiveState -p Result -p NRestarts | tr '\n' ' '); events: ${events:-none}"
  fi
}

# A card that turned read-only (its data partition remounted so, as ext4 does when the card fails
# under it): the service starts from a copy of its data in memory and says so (its status page
# lists the event); then the card is writable again and the service starts from it.
card() {
  local events
  systemctl stop emocall
  if ! mount -o remount,ro /var/lib/emocall; then
    check card fail "could not remount /var/lib/emocall read-only"
  elif systemctl start emocall && events=$(status_events) && grep -q "memory card is read-only" <<<"$events"; then
    check card ok "started read-only, from $(find /run/emocall/card-copy -maxdepth 1 | wc -l) copied entries: $events"
    restart
  else
    check card fail "$(systemctl show emocall -p ActiveState -p Result -p NRestarts | tr '\n' ' '); events: ${events:-none}; $(journalctl -u emocall -n 5 --no-pager | tr '\n' ' ')"
  fi
  systemctl stop emocall
  if ! { mount -o remount,rw /var/lib/emocall && rm -rf /run/emocall/card-copy && systemctl start emocall; }; then
    check card fail "the service did not start again on the writable card"
  fi
}

# The state partition did not mount (fstab's nofail: a check that could not repair it, a card whose
# partition is gone): the service still runs, finds the mark the image leaves under the mount point
# and says it cannot start (appliance/card.py), where a mount it required (StateDirectory=) failed
# it before it ran, in silence. Then the partition is mounted again and the service starts from it.
unmounted() {
  local i said=/run/emocall/cannot-start-said since line
  systemctl stop emocall
  rm -f "$said"
  since=$(date +%s)
  # Lazily: emocall's user manager (PipeWire) has its home, the partition, as working directory.
  if line=$(umount --lazy /var/lib/emocall 2>&1 && systemctl mask --runtime var-lib-emocall.mount 2>&1); then
    systemctl start emocall 2>/dev/null  # fails: the unit exits after saying it cannot start
    for i in $(seq 90); do [ -e "$said" ] && break; sleep 1; done
    line=$(journalctl -u emocall --since "@$since" --no-pager -o cat | grep -m1 "state partition is not mounted")
    if [ -e "$said" ] && [ -n "$line" ]; then
      check unmounted ok "the service ran and said it cannot start ${i} s after the start: $line"
    else
      check unmounted fail "$(systemctl show emocall -p ActiveState -p Result | tr '\n' ' '); $(journalctl -u emocall --since "@$since" -n 4 --no-pager | tr '\n' ' ')"
    fi
  else
    check unmounted fail "could not unmount /var/lib/emocall: ${line//$'\n'/ }"
  fi
  # Whatever happened above: the partition mounted and the service running again, for what follows.
  systemctl stop emocall
  systemctl unmask --runtime var-lib-emocall.mount >/dev/null 2>&1
  mountpoint -q /var/lib/emocall || mount /var/lib/emocall
  systemctl reset-failed emocall
  if ! systemctl start emocall; then
    check unmounted fail "the service did not start again on the mounted partition"
  fi
}

# A damaged page of state.db (how a failing card shows): the service repairs it at its start, says
# so (its status page lists the event), keeps the damaged file beside it on the state partition
# and runs; then the database as it was is put back for the checks that follow.
damaged_state() {
  local db=/var/lib/emocall/state.db keep=/root/state.db.before events="" i page size kept
  systemctl stop emocall
  cp -p "$db" "$keep"
  page=$("$venv/bin/python" -c 'import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", ("settings",)).fetchone()[0])
print(db.execute("PRAGMA page_size").fetchone()[0])' "$db" | tr '\n' ' ')
  read -r page size <<<"$page"
  head -c "$size" /dev/zero | tr '\0' '\377' | dd of="$db" bs="$size" seek=$((page - 1)) conv=notrunc status=none
  systemctl start emocall
  for i in $(seq 90); do
    events=$(status_events) && grep -q "state database was damaged" <<<"$events" && break
    sleep 1
  done
  kept=$(find /var/lib/emocall -maxdepth 1 -name 'state.db.damaged-*[0-9]Z' -printf '%f\n' | head -1)
  if grep -q "state database was damaged" <<<"$events" && systemctl is-active -q emocall && [ -n "$kept" ]; then
    check damaged_state ok "repaired at the start, ${i} s; kept $kept; events: $events"
  else
    check damaged_state fail "$(systemctl show emocall -p ActiveState -p Result | tr '\n' ' '); events: ${events:-none}; $(journalctl -u emocall -n 5 --no-pager | tr '\n' ' ')"
  fi
  systemctl stop emocall
  rm -f "$db"* && cp -p "$keep" "$db" && rm -f "$keep"
  if ! systemctl start emocall; then
    check damaged_state fail "the service did not start again on the database as it was"
  fi
}

# A damaged identity key (a failing card): the service sets it aside, makes a new identity and says
# so at its start ("the identity changed"), where before it said it could not start at every
# restart; then the key and the database as they were are put back.
damaged_key() {
  local data=/var/lib/emocall keep=/root/key-check events="" i kept
  systemctl stop emocall
  mkdir -p "$keep" && cp -p "$data/identity.key" "$data"/state.db* "$keep/"
  printf 'not a key\n' >"$data/identity.key"
  systemctl start emocall
  for i in $(seq 90); do
    events=$(status_events) && grep -q "the identity changed" <<<"$events" && break
    sleep 1
  done
  kept=$(find "$data" -maxdepth 1 -name 'identity.key.damaged-*[0-9]Z' -printf '%f\n' | head -1)
  if grep -q "the identity changed" <<<"$events" && systemctl is-active -q emocall && [ -n "$kept" ]; then
    check damaged_key ok "a new identity at the start, ${i} s; kept $kept; events: $events"
  else
    check damaged_key fail "$(systemctl show emocall -p ActiveState -p Result | tr '\n' ' '); events: ${events:-none}; $(journalctl -u emocall -n 5 --no-pager | tr '\n' ' ')"
  fi
  systemctl stop emocall
  rm -f "$data"/identity.key* "$data"/state.db* && cp -p "$keep"/* "$data/" && rm -rf "$keep"
  if ! systemctl start emocall; then
    check damaged_key fail "the service did not start again on the key as it was"
  fi
}

# The setup hotspot's sandbox (emocall-hotspot.service: ProtectSystem=strict, PrivateTmp and the
# rest): its own unit runs, in place of the script (which exits at once on a network), each kind of
# thing the script does there: routes, NetworkManager, Wi-Fi, its two writable folders, the voice.
hotspot() {
  local dir=/run/systemd/system/emocall-hotspot.service.d out=/var/lib/emocall/hotspot-check result
  mkdir -p "$dir"
  cat >/run/emocall-hotspot-check <<'EOF'
#!/bin/bash
uid=$(id -u emocall)
step() { if said=$("$@" 2>&1); then echo "ok: $1"; else echo "FAIL: $* (${said//$'\n'/ })"; fi; }
step ip -4 route show default
step nmcli -t -f DEVICE,TYPE device
step iw dev
step sh -c 'echo x >/etc/emocall/hotspot-check && rm /etc/emocall/hotspot-check'
step sh -c 'echo x >/var/lib/emocall/wifi-check && rm /var/lib/emocall/wifi-check'
step sh -c '! touch /etc/hotspot-check 2>/dev/null'
step timeout 60 runuser -u emocall -- env XDG_RUNTIME_DIR="/run/user/$uid" \
  /opt/emocall/venv/bin/emocall --config /etc/emocall/config.toml say "Hotspot check."
EOF
  chmod 0755 /run/emocall-hotspot-check
  printf '[Service]\nType=oneshot\nRestart=no\nExecStart=\nExecStart=/bin/sh -c "/bin/bash /run/emocall-hotspot-check >%s"\n' \
    "$out" >"$dir/50-check.conf"
  systemctl daemon-reload
  systemctl stop emocall-hotspot.service
  if systemctl start emocall-hotspot.service && result=$(cat "$out") && ! grep -q FAIL <<<"$result"; then
    check hotspot ok "in its sandbox: $(tr '\n' ' ' <<<"$result")"
  else
    check hotspot fail "$(systemctl show emocall-hotspot -p Result -p ExecMainStatus | tr '\n' ' '); ${result:-no output} $(journalctl -u emocall-hotspot -n 3 --no-pager | tr '\n' ' ')"
  fi
  rm -rf "$dir" /run/emocall-hotspot-check "$out"
  systemctl daemon-reload
  systemctl reset-failed emocall-hotspot.service 2>/dev/null || true
}

service
pipewire
speaker
hotspot
microphone
lgpio
display
coral
vision
clock
memory_mounts
bengali
other_scripts
card
unmounted
damaged_state
damaged_key
echo SELFTEST
# Through the command an owner's helper types (files/bin/emocall): the service's user and settings.
emocall selftest --json | tr -d '\n'
echo
