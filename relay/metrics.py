"""Prometheus metrics, one registry per application (tests run several nodes in one
process). Labels never carry identities or envelope ids: only routes and statuses."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("backchannel_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("backchannel_http_request_seconds", "HTTP request latency",
                                 ["route"], registry=r)
        self.accepted = Counter("backchannel_envelopes_accepted",
                                "Envelopes newly stored", registry=r)
        self.duplicates = Counter("backchannel_envelopes_duplicate",
                                  "Submissions of an envelope already stored", registry=r)
        self.sealed_bytes = Counter("backchannel_sealed_bytes_accepted",
                                    "Sealed bytes newly stored", registry=r)
        self.delivered = Counter("backchannel_deliveries_fetched",
                                 "First fetches of an envelope by a recipient", registry=r)
        self.acked = Counter("backchannel_deliveries_acknowledged",
                             "Deliveries acknowledged by a recipient", registry=r)
        self.registrations = Counter("backchannel_registrations",
                                     "Members registered", registry=r)
        self.rejections = Counter("backchannel_problems", "Problem responses by type",
                                  ["type"], registry=r)
        self.ws_sessions = Gauge("backchannel_websocket_sessions",
                                 "Authenticated WebSocket sessions", registry=r)
        self.ws_unauthenticated = Gauge(
            "backchannel_websocket_unauthenticated",
            "WebSocket connections waiting to authenticate (bounded by "
            "ws_unauthenticated_max)", registry=r)
        self.ws_pushed = Counter("backchannel_websocket_pushes",
                                 "Notices pushed to WebSocket clients", registry=r)
        self.pushes = Counter("backchannel_federation_pushes",
                              "Pushes to peer nodes by kind (envelope, statements) and "
                              "outcome (ok, retry, refused, expired)", ["kind", "outcome"],
                              registry=r)
        self.federation_received = Counter("backchannel_federation_received",
                                           "Envelopes and statements newly stored from "
                                           "peers", ["kind"], registry=r)
        self.purged = Counter("backchannel_purged", "Rows purged by retention",
                              ["what"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
