"""The owner of an `emocall run` unit in a home namespace, for tests/test_relay.py (run inside it).

``python -m tests.relay_owner PORT DATA_DIR ACTION JSON`` prints one JSON line:

- ``settings {changes}``: log in as the owner (the code read off the unit's display) and change
  settings; prints the owner code it typed.
- ``pair {address, peer_dir, before}``: log in, ask the unit at ``address`` (here a relay account) to
  pair, read the code the other unit shows (``peer_dir``'s display, not ``before``), type it.
- ``call {to}``, ``hangup {}``, ``status {}``: the unit's own local API, as `emocall call` uses it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from appliance.call.demo_units import DemoUnit, OwnerBrowser
from appliance.call.local import LocalUnitError, ask


def main(port: int, data_dir: Path, action: str, args: dict[str, Any]) -> dict[str, Any]:
    unit = DemoUnit("owner", "pattern", port, data_dir)
    if action == "settings":
        owner = OwnerBrowser(unit)
        code = owner.log_in()
        owner.request("PATCH", "/api/settings", args["changes"])
        return {"code": code}
    if action == "pair":
        owner = OwnerBrowser(unit)
        owner.log_in()
        owner.request("POST", "/api/pair", {"address": args["address"]})
        code = DemoUnit("peer", "pattern", 0, Path(args["peer_dir"])).shown_code(args["before"])
        return owner.request("POST", "/api/pair/code", {"code": code})
    if action == "call":
        return ask(port, "/api/call", {"to": args["to"]})
    if action == "hangup":
        return ask(port, "/api/hangup", {})
    try:
        return {**ask(port, "/api/status"), "call": ask(port, "/api/call")}
    except LocalUnitError as e:
        return {"starting": str(e)}  # not answering yet


if __name__ == "__main__":
    result = main(int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]))
    print(json.dumps(result))
