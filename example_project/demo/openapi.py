"""Turn an OpenAPI 3 schema into plain rows the API page can render without JavaScript."""

from __future__ import annotations

from typing import Any

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def resolve(schema: dict[str, Any], node: Any) -> dict[str, Any]:
    """Return ``node`` with a local ``$ref`` (``#/components/...``) followed; ``{}`` if absent."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node and seen < 10:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return {}
        target: Any = schema
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        node = target
        seen += 1
    return node if isinstance(node, dict) else {}


def type_label(schema: dict[str, Any], node: Any) -> str:
    """Return a short human label of a schema node's type (``string (date-time)``, ``[Item]``)."""
    if isinstance(node, dict) and isinstance(node.get("$ref"), str):
        return node["$ref"].rsplit("/", 1)[-1]
    node = resolve(schema, node)
    if "allOf" in node or "oneOf" in node or "anyOf" in node:
        options = node.get("allOf") or node.get("oneOf") or node.get("anyOf") or []
        return " | ".join(type_label(schema, item) for item in options)
    kind = node.get("type", "object")
    if kind == "array":
        return f"[{type_label(schema, node.get('items', {}))}]"
    if node.get("enum"):
        return f"{kind}: " + ", ".join(str(value) for value in node["enum"])
    if node.get("format"):
        return f"{kind} ({node['format']})"
    return str(kind)


def fields_of(schema: dict[str, Any], node: Any) -> list[dict[str, Any]]:
    """Return the properties of an object schema as ``name/type/required/description`` rows."""
    node = resolve(schema, node)
    for combined in ("allOf", "oneOf", "anyOf"):
        if combined in node:
            rows: list[dict[str, Any]] = []
            for item in node[combined]:
                rows.extend(fields_of(schema, item))
            return rows
    required = set(node.get("required", []))
    rows = []
    for name, prop in (node.get("properties") or {}).items():
        resolved = resolve(schema, prop)
        rows.append(
            {
                "name": name,
                "type": type_label(schema, prop),
                "required": name in required,
                "read_only": bool(resolved.get("readOnly")),
                "write_only": bool(resolved.get("writeOnly")),
                "description": resolved.get("description", ""),
            }
        )
    return rows


def _json_schema(content: Any) -> Any:
    if not isinstance(content, dict):
        return None
    media = content.get("application/json") or next(iter(content.values()), None)
    return media.get("schema") if isinstance(media, dict) else None


def operations_from_schema(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Return one row per operation: path, method, summary, request fields, responses.

    Responses are ``{"status", "description", "fields"}`` rows sorted by status code.
    """
    operations = []
    for path, item in sorted((schema.get("paths") or {}).items()):
        for method in HTTP_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            body = resolve(schema, operation.get("requestBody", {}))
            request_schema = _json_schema(body.get("content"))
            responses = []
            for status, response in sorted((operation.get("responses") or {}).items()):
                response = resolve(schema, response)
                response_schema = _json_schema(response.get("content"))
                responses.append(
                    {
                        "status": status,
                        "description": response.get("description", ""),
                        "type": type_label(schema, response_schema) if response_schema else "",
                        "fields": fields_of(schema, response_schema) if response_schema else [],
                    }
                )
            operations.append(
                {
                    "path": path,
                    "method": method.upper(),
                    "operation_id": operation.get("operationId", ""),
                    "summary": operation.get("summary", ""),
                    "description": operation.get("description", ""),
                    "tags": operation.get("tags", []),
                    "security": [
                        next(iter(entry), "")
                        for entry in operation.get("security", [])
                        if isinstance(entry, dict) and entry
                    ],
                    "request_fields": fields_of(schema, request_schema) if request_schema else [],
                    "responses": responses,
                }
            )
    return operations
