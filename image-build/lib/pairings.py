"""Run inside the booted image by boot-test.sh --power-cut and --restore, as the service user.

``write``: adds pairings one at a time through the appliance's own StateStore and prints
"committed N" after each commit returned, until the power is cut. ``count``: checks the database
and prints how many pairings it holds. ``backup``: pairs a unit named Bela and writes to stdout
the backup the settings page gives (appliance/backup.py); ``names``: the paired units' names.
"""

import os
import sys
from pathlib import Path

from appliance.backup import make_backup
from appliance.state import StateStore

DB = Path("/var/lib/emocall/state.db")
CONFIG = Path("/etc/emocall/config.toml")


def main(mode: str) -> int:
    store = StateStore(DB)
    if mode == "count":
        store.check()
        print(len(store.peers()))
        return 0
    if mode == "names":
        print(" ".join(sorted(p.name for p in store.peers())))
        return 0
    if mode == "backup":
        store.add_peer(os.urandom(16).hex(), "Bela", "192.0.2.7:8080", os.urandom(32))
        name = store.settings().display_name
        sys.stdout.buffer.write(make_backup(DB.parent, name, CONFIG, Path("/etc/emocall/relay.password")))
        return 0
    for n in range(1_000_000):
        store.add_peer(os.urandom(8).hex(), f"peer {n}", "192.0.2.1:8080", os.urandom(32))
        print("committed", n + 1, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
