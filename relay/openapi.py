"""The OpenAPI 3.1 description of API v1, served at ``/v1/openapi.json``.

A test checks that every route of the application is described here and that
nothing else is."""

from __future__ import annotations

from typing import Any, Final

from .config import RelayConfig
from .problems import TYPE_BASE

SLUGS: Final = ("bad-request", "envelope-invalid", "unroutable", "expired", "statement-invalid",
                "signature-missing", "signature-invalid", "signature-expired", "replay",
                "unauthorized", "forbidden", "not-a-peer", "invitation-invalid", "not-found",
                "method-not-allowed", "conflict", "gone", "too-large", "unsupported-media-type",
                "rate-limited", "internal")

_DSSE = {"$ref": "#/components/schemas/Dsse"}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"}}}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _obj(required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props,
            "additionalProperties": False}


_ACCEPTED = _obj(["id", "receipt"], {"id": {"type": "string"}, "receipt": _DSSE})
_SIGNED_ERRORS = {
    "400": _problem("Malformed request (bad-request and the more specific types)"),
    "401": _problem("Missing, invalid, expired or replayed signature, or unknown key"),
    "403": _problem("Revoked member (forbidden)"),
    "429": _problem("Rate limit exceeded; see Retry-After"),
}
_PUSHED = _obj(["id", "stored"], {"id": {"type": "string"}, "stored": {"type": "boolean"}})
_PEER_ERRORS = {
    "400": _problem("Malformed request, envelope-invalid, statement-invalid, unroutable "
                    "(not on the route, or a skipped hop) or expired"),
    "401": _problem("Missing, invalid, expired or replayed signature"),
    "403": _problem("not-a-peer (the signing key is not a pinned peer), or forbidden "
                    "(statements from a node that is not the next hop)"),
}
_ID_PARAM = {"name": "id", "in": "path", "required": True,
             "schema": {"type": "string", "minLength": 1, "maxLength": 64}}
_JSON_BODY_ERRORS = {
    "413": _problem("Request body too large"),
    "415": _problem("Body is not application/json"),
}


def openapi_document(config: RelayConfig) -> dict[str, Any]:
    servers = [{"url": config.url}] if config.url else []
    signed: list[dict[str, list[str]]] = [{"httpSignature": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Backchannel relay node API",
            "version": "1",
            "description": (
                "Store-and-forward relay for sealed Backchannel envelopes. Every request "
                "except GET /v1/node, /healthz, /metrics and /v1/openapi.json is signed "
                "with RFC 9421 HTTP Message Signatures (Ed25519, label bc, covering "
                "@method, @target-uri and content-digest, with created, nonce and keyid). "
                "Errors are RFC 9457 problem documents whose type is "
                f"{TYPE_BASE}<slug>. See docs/protocol.md, section HTTP API v1."),
        },
        "servers": servers,
        "paths": {
            "/v1/node": {"get": {
                "operationId": "getNode", "summary": "The node's card, limits and API version",
                "responses": {"200": _ok("Node information", _obj(
                    ["card", "limits", "api"],
                    {"card": _DSSE, "api": {"const": 1},
                     "limits": {"type": "object",
                                "additionalProperties": {"type": "number"}}}))}}},
            "/v1/register": {"post": {
                "operationId": "register",
                "summary": "Join with an invitation; signed by the key of the card presented",
                "security": signed,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _obj(["invitation", "card"], {
                        "invitation": {"type": "string", "description":
                                       "The invitation string (bcinv1.…) or its secret"},
                        "card": _DSSE})}}},
                "responses": {
                    "201": _ok("Registered", _obj(["member", "node"], {
                        "member": _obj(["id", "role", "label"], {
                            "id": {"type": "string"},
                            "role": {"enum": ["delegation", "intermediary"]},
                            "label": {"type": "string"}}),
                        "node": _DSSE})),
                    **_SIGNED_ERRORS, **_JSON_BODY_ERRORS,
                    "403": _problem("invitation-invalid (unknown, used, revoked, expired or "
                                    "for another role) or forbidden (a node card)"),
                    "409": _problem("This identity is already registered")}}},
            "/v1/members/{id}/card": {"get": {
                "operationId": "getMemberCard", "summary": "A member's identity card",
                "security": signed, "parameters": [_ID_PARAM],
                "responses": {"200": _ok("The card", _obj(["card"], {"card": _DSSE})),
                              **_SIGNED_ERRORS,
                              "404": _problem("Unknown or revoked (the same answer)")}}},
            "/v1/envelopes": {"post": {
                "operationId": "submitEnvelope",
                "summary": "Submit a sealed message with its routing envelope (idempotent)",
                "security": signed,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _obj(["envelope", "sealed"], {
                        "envelope": _DSSE,
                        "sealed": {"type": "string", "contentEncoding": "base64url",
                                   "description": "The sealed message, unpadded base64url"}})}}},
                "responses": {
                    "201": _ok("Stored; the node's accepted statement", _ACCEPTED),
                    "200": _ok("Already stored; the same accepted statement", _ACCEPTED),
                    **_SIGNED_ERRORS, **_JSON_BODY_ERRORS,
                    "403": _problem("Revoked member, or the envelope's sender is not the "
                                    "caller"),
                    "404": _problem("A recipient is not an active member of this node"),
                    "409": _problem("The same content is stored under another envelope")}}},
            "/v1/inbox": {"get": {
                "operationId": "listInbox",
                "summary": "Unacknowledged deliveries to the caller, by cursor",
                "security": signed,
                "parameters": [
                    {"name": "after", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 0, "default": 0}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1,
                                "maximum": config.inbox_page_max, "default": 100}}],
                "responses": {"200": _ok("A page of the inbox", _obj(["items", "next"], {
                    "items": {"type": "array", "items": _obj(
                        ["cursor", "id", "envelope", "size", "received"],
                        {"cursor": {"type": "integer"}, "id": {"type": "string"},
                         "envelope": _DSSE, "size": {"type": "integer"},
                         "received": {"type": "string", "format": "date-time"}})},
                    "next": {"type": "integer", "description":
                             "Pass as after= for the next page"}})),
                    **_SIGNED_ERRORS}}},
            "/v1/envelopes/{id}": {"get": {
                "operationId": "fetchEnvelope",
                "summary": "Fetch an envelope and its sealed bytes (sender and recipients); "
                           "a recipient's first fetch makes the node sign 'delivered'",
                "security": signed, "parameters": [_ID_PARAM],
                "responses": {"200": _ok("The envelope", _obj(["envelope", "sealed"], {
                    "envelope": _DSSE,
                    "sealed": {"type": "string", "contentEncoding": "base64url"}})),
                    **_SIGNED_ERRORS,
                    "404": _problem("Unknown, or not addressed to or sent by the caller"),
                    "410": _problem("Expired or purged")}}},
            "/v1/envelopes/{id}/ack": {"post": {
                "operationId": "acknowledgeEnvelope",
                "summary": "Acknowledge receipt (idempotent), optionally with the caller's "
                           "opened statement",
                "security": signed, "parameters": [_ID_PARAM],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _obj([], {"opened": {"oneOf": [_DSSE, {"type": "null"}]}})}}},
                "responses": {"200": _ok("Acknowledged", _obj(["acknowledged"], {
                    "acknowledged": {"const": True}})),
                    **_SIGNED_ERRORS, **_JSON_BODY_ERRORS,
                    "404": _problem("Not in the caller's inbox")}}},
            "/v1/envelopes/{id}/receipts": {"get": {
                "operationId": "listReceipts",
                "summary": "Statements about an envelope, in time order",
                "security": signed, "parameters": [_ID_PARAM],
                "responses": {"200": _ok("The statements, and the cards of their signers "
                                         "known to this node", _obj(["statements", "cards"], {
                    "statements": {"type": "array", "items": _DSSE},
                    "cards": {"type": "array", "items": _DSSE}})),
                    **_SIGNED_ERRORS,
                    "404": _problem("Unknown, or not addressed to or sent by the caller")}}},
            "/v1/federation/envelopes": {"post": {
                "operationId": "pushEnvelope",
                "summary": "Node to node: an envelope handed on along its route (idempotent "
                           "by envelope id); signed by a pinned peer node",
                "security": signed,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _obj(["envelope", "sealed"], {
                        "envelope": _DSSE,
                        "sealed": {"type": "string", "contentEncoding": "base64url"},
                        "statements": {"type": "array", "items": _DSSE, "maxItems": 32},
                        "cards": {"type": "array", "items": _DSSE, "maxItems": 64}})}}},
                "responses": {
                    "201": _ok("Stored now", _PUSHED),
                    "200": _ok("Already stored; nothing else happened", _PUSHED),
                    **_PEER_ERRORS, **_JSON_BODY_ERRORS,
                    "404": _problem("At the destination: a recipient is not a member"),
                    "409": _problem("The same content is stored under another envelope")}}},
            "/v1/federation/statements": {"post": {
                "operationId": "pushStatements",
                "summary": "Node to node: statements travelling back towards the origin "
                           "(idempotent by statement id); signed by the next hop",
                "security": signed,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _obj(["envelope", "statements"], {
                        "envelope": {"type": "string"},
                        "statements": {"type": "array", "items": _DSSE, "maxItems": 128},
                        "cards": {"type": "array", "items": _DSSE, "maxItems": 64}})}}},
                "responses": {
                    "200": _ok("Stored (the number newly stored)", _obj(
                        ["stored"], {"stored": {"type": "integer", "minimum": 0}})),
                    **_PEER_ERRORS, **_JSON_BODY_ERRORS,
                    "404": _problem("Unknown envelope")}}},
            "/v1/ws": {"get": {
                "operationId": "pushDeliveries",
                "summary": "WebSocket: challenge, signed auth, then one message per new "
                           "delivery (see docs/protocol.md)",
                "responses": {"101": {"description": "Switching to WebSocket"},
                              "400": _problem("Not a WebSocket upgrade"),
                              "429": _problem("Too many connections waiting to "
                                              "authenticate (Retry-After)")}}},
            "/healthz": {"get": {
                "operationId": "health", "summary": "Liveness",
                "responses": {"200": _ok("Alive", _obj(["status"],
                                                       {"status": {"const": "ok"}}))}}},
            "/metrics": {"get": {
                "operationId": "metrics", "summary": "Prometheus metrics (text format)",
                "responses": {"200": {"description": "Metrics",
                                      "content": {"text/plain": {"schema": {
                                          "type": "string"}}}}}}},
            "/v1/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document",
                "responses": {"200": _ok("OpenAPI 3.1 document", {"type": "object"})}}},
        },
        "components": {
            "schemas": {
                "Dsse": {
                    "type": "object", "description": "A DSSE envelope (padded standard base64)",
                    "required": ["payload", "payloadType", "signatures"],
                    "properties": {
                        "payload": {"type": "string", "contentEncoding": "base64"},
                        "payloadType": {"type": "string"},
                        "signatures": {"type": "array", "items": {
                            "type": "object", "required": ["keyid", "sig"],
                            "properties": {"keyid": {"type": "string"},
                                           "sig": {"type": "string"}}}}}},
                "Problem": {
                    "type": "object", "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string", "format": "uri",
                                 "enum": [TYPE_BASE + slug for slug in SLUGS]},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"}}},
            },
            "securitySchemes": {
                "httpSignature": {
                    "type": "apiKey", "in": "header", "name": "Signature",
                    "description": "RFC 9421 signature with Signature-Input and "
                                   "Content-Digest (see info.description)"}},
        },
    }
