"""GET /api/openapi.json and GET /api/docs: the API description, as JSON and as a page.

Both come from imagetotext.api.openapi; the page is rendered here, server-side, without JavaScript.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.csrf import csrf_exempt

from imagetotext.api.openapi import build_document
from imagetotext.api.wire import methods

Doc = dict[str, Any]

INLINE = [
    (re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)"), r'<a href="\2">\1</a>'),
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
]


@csrf_exempt  # GET only: a POST from elsewhere gets the 405, not a CSRF page
@methods("GET")
def openapi_json(request: HttpRequest) -> JsonResponse:
    """The OpenAPI document; public, like the page, so tools can fetch it without a key."""
    return JsonResponse(build_document(), json_dumps_params={"indent": 2, "ensure_ascii": False})


@csrf_exempt
@methods("GET")
def api_docs(request: HttpRequest) -> HttpResponse:
    """The same document as a page: contents, one section per operation, then the schemas."""
    doc = build_document()
    server = request.build_absolute_uri("/").rstrip("/")
    context = {
        "info": doc["info"],
        "introduction": [markup(part) for part in doc["info"]["description"].split("\n\n")],
        "operations": [describe(doc, path, method, op, server) for path, method, op in operations(doc)],
        "schemas": [schema_entry(doc, name) for name in doc["components"]["schemas"]],
    }
    return render(request, "imagetotext/api_docs.html", context)


def markup(text: str) -> SafeString:
    """The little Markdown the document uses (code, bold, links), escaped first."""
    html: str = escape(text)
    for pattern, replacement in INLINE:
        html = pattern.sub(replacement, html)
    return mark_safe(html)  # noqa: S308 - built from escaped text


def operations(doc: Doc) -> list[tuple[str, str, Doc]]:
    return [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]


def describe(doc: Doc, path: str, method: str, op: Doc, server: str) -> dict[str, Any]:
    """Everything the page shows about one operation."""
    media, body = request_body(op)
    return {
        "id": op["operationId"],
        "method": method.upper(),
        "path": path,
        "summary": op["summary"],
        "description": markup(op["description"]),
        "tag": op["tags"][0],
        "auth": op.get("security", doc["security"]) != [],
        "parameters": [parameter_entry(p) for p in op.get("parameters", [])],
        "body_media": media,
        "body_fields": fields_of(doc, body["schema"]) if body else [],
        "curl": curl(server, path, method, op, media, body),
        "responses": response_entries(op["responses"]),
        "callback": callback_entry(doc, op),
    }


def request_body(op: Doc) -> tuple[str, Doc | None]:
    for media, body in op.get("requestBody", {}).get("content", {}).items():
        return media, body
    return "", None


def resolve(doc: Doc, schema: Doc) -> Doc:
    """The schema a $ref points at (components only), or the schema itself."""
    if "$ref" in schema:
        return doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def type_of(schema: Doc) -> tuple[str, str]:
    """A type's label, and the schema it links to (if any): ("array of TextOutput", "TextOutput")."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return name, name
    if "anyOf" in schema:
        label, link = type_of(schema["anyOf"][0])
        return f"{label} or null", link
    if schema.get("type") == "array":
        label, link = type_of(schema["items"])
        return f"array of {label}", link
    label = schema.get("type", "any")
    return (f"{label} ({schema['format']})" if "format" in schema else label), ""


def fields_of(doc: Doc, schema: Doc) -> list[dict[str, Any]]:
    schema = resolve(doc, schema)
    required = set(schema.get("required", []))
    entries = []
    for name, prop in schema.get("properties", {}).items():
        label, link = type_of(prop)
        text = prop.get("description") or resolve(doc, prop.get("anyOf", [prop])[0]).get("description", "")
        entries.append(
            {"name": name, "type": label, "link": link, "required": name in required, "description": markup(text)}
        )
    return entries


def parameter_entry(parameter: Doc) -> dict[str, Any]:
    return {
        "name": parameter["name"],
        "in": parameter["in"],
        "type": type_of(parameter["schema"])[0],
        "required": parameter.get("required", False),
        "description": markup(parameter.get("description", "")),
    }


def response_entries(responses: Doc) -> list[dict[str, Any]]:
    entries = []
    for status, response in responses.items():
        content = response.get("content", {})
        media = next(iter(content), "")
        example = content.get(media, {}).get("example")
        link = type_of(content[media]["schema"])[1] if media else ""
        entries.append(
            {
                "status": status,
                "description": markup(response["description"]),
                "media": ", ".join(content),
                "schema": link,
                "headers": ", ".join(response.get("headers", {})),
                "example": pretty(example) if example is not None else "",
            }
        )
    return entries


def callback_entry(doc: Doc, op: Doc) -> dict[str, Any] | None:
    for expressions in op.get("callbacks", {}).values():
        for expression, item in expressions.items():
            post = item["post"]
            body = post["requestBody"]["content"]["application/json"]
            return {
                "url": expression,
                "description": markup(post["description"]),
                "headers": [parameter_entry(p) for p in post["parameters"]],
                "fields": fields_of(doc, body["schema"]),
                "example": pretty(body["example"]),
            }
    return None


def schema_entry(doc: Doc, name: str) -> dict[str, Any]:
    schema = doc["components"]["schemas"][name]
    return {
        "name": name,
        "description": markup(schema.get("description", "")),
        "enum": schema.get("enum", []),
        "fields": fields_of(doc, schema),
    }


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def curl(server: str, path: str, method: str, op: Doc, media: str, body: Doc | None) -> str:
    """An example request as a curl command line."""
    url = server + path
    parameters = op.get("parameters", [])
    for parameter in parameters:
        if parameter["in"] == "path":
            url = url.replace("{" + parameter["name"] + "}", str(parameter["example"]))
    if method == "get" and (first := next((p for p in parameters if p["in"] == "query"), None)):
        url += f"?{first['name']}={json.dumps(first['example']).strip(chr(34))}"
    lines = [f"curl {shlex.quote(url)}" if method == "get" else f"curl -X {method.upper()} {shlex.quote(url)}"]
    if op.get("security") != []:
        lines.append("-H 'Authorization: Bearer ak-…'")
    if media == "multipart/form-data" and body:
        lines += [f"-F {shlex.quote(f'{name}={value}')}" for name, value in body["example"].items()]
    elif body:
        lines += ["-H 'Content-Type: application/json'", f"-d {shlex.quote(json.dumps(body['example']))}"]
    return " \\\n  ".join(lines)
