"""API fuzzing against the OpenAPI description: no 500s, and the state store stays consistent.

Bodies come from each operation's JSON schema (the subset pydantic writes, turned into hypothesis
strategies below: mostly valid, sometimes with one field broken) and from arbitrary JSON;
requests carry a valid owner session and CSRF token, so they reach the handlers' validation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.state import Settings
from appliance.web import openapi
from tests.pairing_units import Unit, make_unit

# These make the unit contact the address in the body: fuzzed only with bodies that fail validation.
REACHES_OUT = {("post", "/api/pair")}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=10,
)


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unit]:
    # High limits: the fuzzer guesses codes much faster than a person, and must not lock itself out.
    u = make_unit(Path(tmp_path_factory.mktemp("fuzz")), "Fuzz", max_wrong_codes=20)
    yield u
    u.close()


@pytest.fixture(scope="module")
def owner(unit: Unit) -> tuple[FlaskClient, dict[str, str]]:
    return unit.owner()


def _operations() -> list[tuple[str, str, dict[str, Any] | None]]:
    ops = []
    for path, methods in openapi.document("fuzz")["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            ops.append((method, path, body))
    return ops


OPERATIONS = _operations()
WITH_BODIES = [op for op in OPERATIONS if op[2] is not None and op[:2] not in REACHES_OUT]


def from_schema(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Values matching ``schema``: objects, strings with patterns and lengths, bounded integers, enums."""
    defs = schema.get("$defs", defs or {})
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, defs) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        props = {k: from_schema(v, defs) for k, v in schema["properties"].items()}
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: v for k, v in props.items() if k in required},
            optional={k: v for k, v in props.items() if k not in required},
        )
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength", 60)
        if "pattern" in schema:
            # Cut to the length limit: mostly still valid, and a broken one is a fair fuzz case too.
            return st.from_regex(schema["pattern"], fullmatch=True).map(lambda t: t[:high])
        return st.text(min_size=low, max_size=high)
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    raise AssertionError(f"the fuzzer does not know this schema: {schema}")


def _check_consistent(unit: Unit) -> None:
    unit.store.check()
    Settings.model_validate(unit.store.settings().model_dump())
    assert all(len(p.public_key) == 32 for p in unit.store.peers())


def _send(client: FlaskClient, csrf: dict[str, str], method: str, path: str, body: Any) -> int:
    response = client.open(
        path.replace("{unit_id}", "0" * 32), method=method.upper(), json=body, headers=csrf
    )
    assert response.status_code < 500, (method, path, body, response.get_data(as_text=True))
    if path.startswith("/api/"):
        assert response.is_json, (method, path)
    return response.status_code


@pytest.mark.parametrize(
    ("method", "path", "schema"), WITH_BODIES, ids=[f"{m} {p}" for m, p, _ in WITH_BODIES]
)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_schema_shaped_bodies(
    unit: Unit,
    owner: tuple[FlaskClient, dict[str, str]],
    method: str,
    path: str,
    schema: dict[str, Any],
    data: st.DataObject,
) -> None:
    client, csrf = owner
    _send(client, csrf, method, path, data.draw(from_schema(schema)))
    _check_consistent(unit)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), body=JSON)
def test_arbitrary_json_everywhere(
    unit: Unit, owner: tuple[FlaskClient, dict[str, str]], data: st.DataObject, body: Any
) -> None:
    client, csrf = owner
    method, path, _ = data.draw(st.sampled_from(OPERATIONS))
    _send(client, csrf, method, path, body)
    _check_consistent(unit)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(unit_id=st.text(max_size=80))
def test_arbitrary_path_parameters(
    unit: Unit, owner: tuple[FlaskClient, dict[str, str]], unit_id: str
) -> None:
    client, csrf = owner
    response = client.delete(f"/api/peers/{unit_id}", headers=csrf)
    assert response.status_code < 500
    _check_consistent(unit)
