"""Run inside the booted image by boot-test.sh --power-cut, as the service user.

``write``: adds pairings one at a time through the appliance's own StateStore and prints
"committed N" after each commit returned, until the power is cut. ``count``: checks the database
and prints how many pairings it holds.
"""

import os
import sys
from pathlib import Path

from appliance.state import StateStore

DB = Path("/var/lib/emocall/state.db")


def main(mode: str) -> int:
    store = StateStore(DB)
    if mode == "count":
        store.check()
        print(len(store.peers()))
        return 0
    for n in range(1_000_000):
        store.add_peer(os.urandom(8).hex(), f"peer {n}", "192.0.2.1:8080", os.urandom(32))
        print("committed", n + 1, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
