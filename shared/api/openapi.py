"""The OpenAPI 3 document, built from the registered endpoints and the pydantic models."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.api.http import ENDPOINTS, JSON_TYPES, Endpoint, model
from shared.models.records import MessageStatus

VERSION = "1.0.0"
_REF = "#/components/schemas/{model}"
_BODY_TYPES = "A JSON object, with Content-Type " + " or ".join(JSON_TYPES)
_ERROR_TITLES = {
    400: "Invalid input",
    401: "No or unknown API key",
    404: "Not found",
    409: "Exists already (or, for a replay, another one runs)",
    413: "Body too large",
    415: "Unsupported media type",
    429: "Too many requests (see Retry-After)",
    503: "Storage does not answer",
}
# Integer enums a client generator would otherwise name VALUE_1, VALUE_2 (issue 26).
_NAMED_ENUMS = (MessageStatus,)


def _name_enum_values(components: dict[str, Any]) -> None:
    for enum in _NAMED_ENUMS:
        if (schema := components.get(enum.__name__)) is not None:
            schema["x-enum-varnames"] = [enum(v).name for v in schema["enum"]]


def _models(endpoints: list[Endpoint]) -> list[type[BaseModel]]:
    names = ["Problem"] + [n for e in endpoints for n in (e.body, e.query, e.returns) if n]
    return [model(name) for name in dict.fromkeys(names)]


def _schema_of(e: Endpoint) -> dict[str, Any]:
    schema = {"$ref": _REF.format(model=e.returns)}
    return {"type": "array", "items": schema} if e.many else schema


def _operation(e: Endpoint, query_schemas: dict[str, Any]) -> dict[str, Any]:
    summary, _, description = e.summary.partition("\n")
    op: dict[str, Any] = {"operationId": e.name, "summary": summary}
    if description.strip():
        op["description"] = description.strip()
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "format": "uuid"},
        }
        for name in re.findall(r"{(\w+)}", e.route)
    ]
    if e.query:
        props = query_schemas[e.query]["properties"]
        params += [
            {"name": n, "in": "query", "required": False, "schema": s} for n, s in props.items()
        ]
    if params:
        op["parameters"] = params
    if e.body:
        schema = {"$ref": _REF.format(model=e.body)}
        # One media type only: generators given two with the same schema write broken code
        # (openapi-python-client: an undefined `Unset`); the others are named in words.
        op["requestBody"] = {
            "required": True,
            "description": _BODY_TYPES,
            "content": {JSON_TYPES[0]: {"schema": schema}},
        }
    ok: dict[str, Any] = {"description": "Accepted" if e.status == 202 else "OK"}
    if e.returns is not None:
        ok["content"] = {"application/json": {"schema": _schema_of(e)}}
    problem = {"application/problem+json": {"schema": {"$ref": _REF.format(model="Problem")}}}
    codes = (
        set(e.errors) | ({400} if e.body or e.query else set()) | ({413, 415} if e.body else set())
    )
    codes |= set() if e.public else {401, 429}
    op["responses"] = {str(e.status): ok} | {
        str(code): {"description": _ERROR_TITLES[code], "content": problem}
        for code in sorted(codes)
    }
    if e.public:
        op["security"] = []
    return op


@cache
def document() -> dict[str, Any]:
    endpoints = [e for e in ENDPOINTS.values() if e.listed]
    models = _models(endpoints)
    # Inputs are described as validated, outputs as serialised (e.g. timestamps as text).
    inputs = {model(n) for e in endpoints for n in (e.body, e.query) if n}
    _, schemas = models_json_schema(
        [(m, "validation" if m in inputs else "serialization") for m in models],
        ref_template=_REF,
    )
    components = schemas.get("$defs", {})
    _name_enum_values(components)
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        paths.setdefault("/" + e.route, {})[e.method.lower()] = _operation(e, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Service Bus event delivery",
            "version": VERSION,
            "description": "Deliver platform events to your own Azure Service Bus queue.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "Authorization"}
            },
        },
        "security": [{"apiKey": []}],
    }
