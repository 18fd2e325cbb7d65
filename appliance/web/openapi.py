"""The OpenAPI 3.1 description of the JSON API, built from the same models that parse the bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from appliance.pairing import messages, service
from appliance.web import schemas

Access = Literal[
    "anyone", "owner", "this unit only (loopback)", "paired unit (signed)", "anyone, guarded by the code"
]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    access: Access
    body: type[BaseModel] | None = None
    changes: bool = False


OPERATIONS = [
    Operation(
        "get",
        "/api/status",
        "This unit's name, id and backends; recent events and relay accounts for the owner and the unit",
        "anyone",
    ),
    Operation("get", "/api/openapi.json", "This description", "anyone"),
    Operation("get", "/api/owner", "Whether this browser is the owner, and its CSRF token", "anyone"),
    Operation(
        "post", "/api/owner/code", "The unit shows and says a fresh owner code", "anyone", changes=True
    ),
    Operation(
        "post",
        "/api/owner/login",
        "Become the owner with the code the unit says",
        "anyone",
        schemas.OwnerLogin,
        True,
    ),
    Operation(
        "post",
        "/api/owner/button",
        "Become the owner after pressing the unit's button (409 until it is pressed)",
        "anyone",
        changes=True,
    ),
    Operation(
        "post",
        "/api/owner/logout",
        "End the owner session here and for every copy of it",
        "owner",
        None,
        True,
    ),
    Operation("get", "/api/settings", "The settings", "owner"),
    Operation("patch", "/api/settings", "Change some settings", "owner", schemas.SettingsChange, True),
    Operation("get", "/api/peers", "Paired units", "owner"),
    Operation(
        "delete", "/api/peers/{unit_id}", "Unpair a unit (both sides when reachable)", "owner", None, True
    ),
    Operation("get", "/api/discovered", "Units seen on the network (mDNS)", "owner"),
    Operation(
        "post", "/api/pair", "Ask another unit to pair: it says a code", "owner", schemas.PairRequest, True
    ),
    Operation(
        "post", "/api/pair/code", "Finish pairing with the code it says", "owner", schemas.PairCode, True
    ),
    Operation("get", "/api/call", "The call's state", "this unit only (loopback)"),
    Operation("post", "/api/call", "Call a paired unit", "this unit only (loopback)", schemas.CallRequest),
    Operation("post", "/api/call/answer", "Answer the ringing call", "this unit only (loopback)"),
    Operation("post", "/api/hangup", "End the call", "this unit only (loopback)"),
    Operation("post", "/api/call/signal", "Unit to unit: call signalling", "paired unit (signed)"),
    Operation(
        "post",
        service.START_PATH,
        "Unit to unit: start pairing",
        "anyone, guarded by the code",
        messages.PeerStart,
    ),
    Operation(
        "post",
        service.FINISH_PATH,
        "Unit to unit: prove the code",
        "anyone, guarded by the code",
        messages.PeerFinish,
    ),
    Operation("post", service.UNPAIR_PATH, "Unit to unit: forget the caller", "paired unit (signed)"),
    Operation(
        "post", service.HELLO_PATH, "Unit to unit: prove this unit is at this address", "paired unit (signed)"
    ),
]

ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def _operation(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "summary": op.summary,
        "description": f"Who may call it: {op.access}."
        + (" Browsers send the X-CSRF-Token header (from GET /api/owner)." if op.changes else ""),
        "responses": {
            "200": {"description": "Done", "content": {"application/json": {"schema": {"type": "object"}}}},
            "4XX": {
                "description": "Refused, with the reason",
                "content": {"application/json": {"schema": ERROR}},
            },
        },
    }
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": op.body.model_json_schema()}},
        }
    if "{unit_id}" in op.path:
        out["parameters"] = [
            {
                "name": "unit_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": messages.UNIT_ID},
            }
        ]
    return out


def document(version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "emocall unit", "version": version},
        "paths": paths,
    }
