"""The OpenAPI 3.1 document served at ``/api/openapi.json`` (a test checks it lists exactly the
routes the server has)."""

from __future__ import annotations

from typing import Any

from siplb import __version__

from .view import CHANNEL_REJECTS

JSON = dict[str, Any]


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: JSON, description: str) -> JSON:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int, texts: dict[int, str] | None = None) -> JSON:
    """Error responses; ``texts`` replaces the usual description of some codes."""
    described = {
        400: "Bad input.",
        401: "Missing or wrong token (when a token is configured, reads need it too).",
        403: "Changes are refused: no admin token is configured.",
        404: "Unknown set or destination.",
        409: "The balancer has no config file to reload.",
        422: "The new config was refused; the old one stays in force.",
        **(texts or {}),
    }
    out = {str(code): _json(_ref("Error"), described[code]) for code in codes}
    if 422 in codes:
        out["422"] = _json(_ref("ReloadOutcome"), described[422])
    return out


SET_PARAM = {"name": "set", "in": "path", "required": True, "schema": {"type": "string"}}
URI_PARAM = {
    "name": "uri",
    "in": "path",
    "required": True,
    "description": "The destination's URI as configured, percent-encoded (sip%3A10.0.0.5%3A5060).",
    "schema": {"type": "string"},
}
DEST_PARAMS = [SET_PARAM, URI_PARAM]
NULLABLE_NUMBER = {"type": ["number", "null"]}


def _action(verb: str, effect: str) -> JSON:
    return {
        "post": {
            "summary": f"{verb.capitalize()} a destination",
            "description": effect
            + " Admin state belongs to the URI, so it applies in every set listing it. {uri} may"
            " also be a DNS name of the set as configured (a URI naming a host, or its srv):"
            " then every address it has now, and each one a later answer adds, until enabled;"
            " the answer is {set, name, destinations}.",
            "operationId": f"{verb}Destination",
            "parameters": DEST_PARAMS,
            "responses": {
                "200": _json(_ref("Destination"), "The destination after the change."),
                **_errors(401, 403, 404),
            },
        }
    }


SCHEMAS: JSON = {
    "Error": {
        "type": "object",
        "properties": {"error": {"type": "string"}},
        "required": ["error"],
    },
    "Latency": {
        "type": ["object", "null"],
        "description": "OPTIONS probe round-trip times over the last 128 answers.",
        "properties": {
            "avg": {"type": "number"},
            "p95": {"type": "number"},
            "samples": {"type": "integer"},
        },
    },
    "Destination": {
        "type": "object",
        "properties": {
            "set": {"type": "string"},
            "uri": {"type": "string"},
            "transport": {"type": "string", "enum": ["udp", "tcp", "tls"]},
            "state": {
                "type": "string",
                "enum": ["probing", "up", "suspect", "down", "draining", "drained", "disabled"],
                "description": "drained: draining and its last call has ended. probing: new, "
                "no probe answered yet (takes calls only when no destination of its set is up).",
            },
            "health_state": {"type": "string"},
            "probe_state": {"type": "string", "enum": ["probing", "up", "suspect", "down"]},
            "admin": {"type": ["string", "null"], "enum": ["draining", "disabled", None]},
            "cause": {"type": "string", "description": "Why the state last changed."},
            "since": {"type": "number", "description": "Last change, epoch seconds."},
            "weight": {"type": "integer"},
            "priority": {"type": "integer"},
            "max_calls": {"type": ["integer", "null"]},
            "active_calls": {"type": "integer"},
            "calls_total": {"type": "integer", "description": "Calls answered with a 2xx."},
            "cps": {"type": "number", "description": "Answered calls per second (5 s mean)."},
            "latency_ms": _ref("Latency"),
            "failures": {"type": "integer", "description": "Probe and traffic failures."},
            "consecutive_failures": {"type": "integer"},
            "removed": {
                "type": "boolean",
                "description": "Removed by a reload, still carrying calls (draining).",
            },
            "name": {
                "type": ["string", "null"],
                "description": "The DNS name (URI or SRV name as configured) this address was "
                "resolved from; null for a destination configured by address.",
            },
            "attrs": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "The destination's attrs from the config (empty: none).",
            },
        },
    },
    "Set": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "algorithm": {"type": "string"},
            "removed": {"type": "boolean"},
            "active_calls": {"type": "integer"},
            "cps": {"type": "number"},
            "up": {"type": "integer", "description": "Destinations up or suspect."},
            "destinations": {"type": "array", "items": _ref("Destination")},
        },
    },
    "Status": {
        "type": "object",
        "properties": {
            "version": {"type": "string"},
            "node_id": {"type": "string"},
            "worker": {"type": "integer"},
            "started_at": {"type": "number"},
            "uptime_s": {"type": "number"},
            "accepting": {"type": "boolean"},
            "config": {
                "type": "object",
                "properties": {
                    "file": {"type": "string"},
                    "sha256": {"type": "string"},
                    "reloads": {"type": "object"},
                    "last_reload_at": NULLABLE_NUMBER,
                },
            },
            "listeners": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "transport": {"type": "string"},
                        "address": {"type": "string"},
                        "advertise": {"type": ["string", "null"]},
                    },
                },
            },
            "admin": {"type": "object"},
            "totals": {"type": "object"},
            "dns": {
                "type": "array",
                "description": "The DNS names the sets use (RFC 3263): status ok, stale (the "
                "last lookup failed, the last good answer is kept), unresolved (never answered: "
                "no destination from it) or pending.",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "srv": {"type": "boolean"},
                        "status": {
                            "type": "string",
                            "enum": ["pending", "ok", "stale", "unresolved"],
                        },
                        "addresses": {"type": "array", "items": {"type": "string"}},
                        "error": {"type": ["string", "null"]},
                        "answered_at": NULLABLE_NUMBER,
                        "next_lookup_s": {"type": "number"},
                    },
                },
            },
            "media": {
                "type": ["object", "null"],
                "description": "The media engines of [media] (null without it): state, calls, "
                "offer latency and failures of each, and the engine client's counters.",
                "properties": {
                    "engines": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "address": {"type": "string"},
                                "state": {"type": "string", "enum": ["unknown", "up", "down"]},
                                "since": {"type": "number"},
                                "weight": {"type": "integer"},
                                "calls": {"type": "integer"},
                                "offers": {"type": "integer"},
                                "offer_p50_ms": NULLABLE_NUMBER,
                                "offer_max_ms": NULLABLE_NUMBER,
                                "failures": {
                                    "type": "object",
                                    "additionalProperties": {"type": "integer"},
                                },
                            },
                        },
                    },
                    "calls": {"type": "integer"},
                    "forgotten": {"type": "integer"},
                    "pending": {"type": "integer"},
                    "counters": {"type": "object", "additionalProperties": {"type": "integer"}},
                },
            },
        },
    },
    "Event": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "at": {"type": "number"},
            "kind": {
                "type": "string",
                "enum": [
                    "state",
                    "failover",
                    "reload",
                    "weight",
                    "dns",
                    "expired",
                    "ban",
                    "unban",
                    "refused",
                ],
                "description": "refused: requests refused for one reason since the last such "
                "entry (one entry per reason every 10 s at most, never one per request); ban, "
                "unban: a source banned or its ban lifted (past 20 in 10 s, summed with a count).",
            },
            "message": {"type": "string"},
            "uri": {"type": "string"},
            "set": {"type": "string"},
            "old": {"type": "string"},
            "new": {"type": "string"},
            "cause": {"type": "string", "description": "For refused and ban: the reason."},
            "host": {"type": "string", "description": "For ban and unban: the source."},
            "count": {
                "type": "integer",
                "description": "refused: how many; ban: the offence, or how many bans summed.",
            },
        },
    },
    "Ban": {
        "type": "object",
        "properties": {
            "host": {"type": "string"},
            "reason": {
                "type": "string",
                "description": "rate, scanner, enumeration, register-failures, or an "
                "operator's text.",
            },
            "until": {"type": "number", "description": "Its end, epoch seconds."},
            "seconds_left": {"type": "number"},
            "offences": {"type": "integer"},
        },
        "required": ["host", "reason", "until", "seconds_left", "offences"],
    },
    "Protection": {
        "type": "object",
        "properties": {
            "admission": {"type": "boolean", "description": "The admission stage is on."},
            "refused_total": {"type": "integer"},
            "refused": {
                "type": "object",
                "description": "Requests refused before any transaction, by reason, most first "
                "(blocklist, acl, banned, rate, scanner, overload, pending, malformed, ...).",
                "additionalProperties": {"type": "integer"},
            },
            "bans_active": {"type": "integer"},
            "bans": {
                "type": "array",
                "items": _ref("Ban"),
                "description": "The bans in force ending first, at most `limit`.",
            },
            "pending": {
                "type": "object",
                "properties": {
                    "transactions": {
                        "type": "integer",
                        "description": "Server transactions waiting for their final answer.",
                    },
                    "max": {"type": "integer"},
                    "max_per_source": {"type": "integer"},
                    "top_sources": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "host": {"type": "string"},
                                "pending": {"type": "integer"},
                            },
                        },
                    },
                },
            },
            "streams": {
                "type": "object",
                "properties": {
                    "refused": {
                        "type": "object",
                        "description": "TCP and TLS connections refused or closed by a bound.",
                        "additionalProperties": {"type": "integer"},
                    },
                    "inbound": {"type": "integer"},
                    "outbound": {"type": "integer"},
                    "buffered_bytes": {"type": "integer"},
                },
            },
            "admin_refused": {
                "type": "object",
                "description": "Admin API requests refused, by reason.",
                "additionalProperties": {"type": "integer"},
            },
            "internal_errors": {"type": "integer"},
        },
    },
    "Cluster": {
        "type": "object",
        "description": "This member's view of its cluster. Without [cluster]: only "
        '`{"enabled": false}`.',
        "properties": {
            "enabled": {"type": "boolean"},
            "me": {"type": "string", "description": "This member's tag, node.worker."},
            "node": {"type": "string"},
            "config_hash": {"type": "string", "description": "The config this member runs."},
            "redis": {
                "type": "object",
                "properties": {
                    "up": {"type": "boolean", "description": "The last batch went through."},
                    "where": {"type": "string", "description": "URL (no password) or Sentinel."},
                    "errors": {"type": "integer", "description": "Batches that failed."},
                    "reconnects": {"type": "integer"},
                    "last_error": {"type": "string"},
                    "last_ok": {
                        "type": ["number", "null"],
                        "description": "Seconds since Redis last answered.",
                    },
                },
            },
            "members": {
                "type": "array",
                "description": "Every member known (live, or gone and not yet forgotten).",
                "items": {
                    "type": "object",
                    "properties": {
                        "member": {"type": "string", "description": "node.worker"},
                        "node": {"type": "string"},
                        "worker": {"type": "integer"},
                        "alive": {"type": "boolean"},
                        "last_seen": {
                            "type": ["number", "null"],
                            "description": "Seconds since its last heartbeat.",
                        },
                        "peer": {"type": "string", "description": "Its channel's IP:port."},
                        "calls": {"type": "integer", "description": "Live calls it published."},
                        "config_hash": {"type": "string"},
                        "config_matches": {
                            "type": ["boolean", "null"],
                            "description": "It runs this member's config (null: not known).",
                        },
                        "started": {"type": ["number", "null"], "description": "Epoch seconds."},
                    },
                },
            },
            "destinations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "uri": {"type": "string"},
                        "owner": {
                            "type": "string",
                            "description": "The member that probes it and decides its health.",
                        },
                        "state": {"type": "string"},
                        "calls_here": {"type": "integer"},
                        "calls_elsewhere": {
                            "type": "integer",
                            "description": "Live calls the other live members hold on it.",
                        },
                        "limit": {
                            "type": ["integer", "null"],
                            "description": "Calls this member may hold now (its share of "
                            "max_calls); null without a cap.",
                        },
                    },
                },
            },
            "channel": {
                "type": "object",
                "description": "Node-to-node frames at this member, ever.",
                "properties": {
                    "handed_over": {"type": "integer"},
                    "taken_over": {"type": "integer"},
                    "setups": {
                        "type": "object",
                        "description": "Calls in setup shared between nodes (anycast): "
                        "attempts told and heard, and setups of nodes gone continued here.",
                        "properties": {
                            "told": {"type": "integer"},
                            "heard": {"type": "integer"},
                            "adopted": {"type": "integer"},
                        },
                    },
                    "rejected": {
                        "type": "object",
                        "properties": {reason: {"type": "integer"} for reason in CHANNEL_REJECTS},
                    },
                    "unreachable": {"type": "integer"},
                },
            },
            "totals": {
                "type": "object",
                "properties": {
                    "members": {"type": "integer", "description": "Live members."},
                    "nodes": {"type": "integer", "description": "Nodes with a live member."},
                    "calls": {
                        "type": "integer",
                        "description": "Live calls in the cluster, as the live members "
                        "published them.",
                    },
                    "skewed": {
                        "type": "integer",
                        "description": "Live members running another config than this one.",
                    },
                },
            },
        },
        "required": ["enabled"],
    },
    "History": {
        "type": "object",
        "description": "Answered calls per second, one sample a second.",
        "properties": {
            "times": {"type": "array", "items": {"type": "number"}},
            "sets": {"type": "object", "additionalProperties": {"type": "array"}},
            "destinations": {"type": "object", "additionalProperties": {"type": "array"}},
        },
    },
    "ReloadOutcome": {
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "source": {"type": "string"},
            "sha256": {"type": "string"},
            "problems": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                },
            },
            "added": {"type": "array", "items": {"type": "string"}},
            "removed": {"type": "array", "items": {"type": "string"}},
            "reweighted": {"type": "array", "items": {"type": "string"}},
            "warnings": {"type": "array", "items": {"type": "string"}},
            "summary": {"type": "string"},
        },
    },
    "Health": {
        "type": "object",
        "description": "Whether the node should receive new traffic ([health] sets: a "
        "destination up, by the policy; listening; not stopping; not drained).",
        "properties": {
            "healthy": {"type": "boolean"},
            "reasons": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Why not (empty when healthy).",
            },
            "draining": {"type": "boolean", "description": "The node is drained."},
            "node_id": {"type": "string"},
        },
        "required": ["healthy", "reasons", "draining"],
    },
}

PATHS: JSON = {
    "/api/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1 JSON."}},
        }
    },
    "/api/status": {
        "get": {
            "summary": "Version, uptime, config file and hash, listeners, totals",
            "operationId": "status",
            "responses": {"200": _json(_ref("Status"), "Status."), **_errors(401)},
        }
    },
    "/api/sets": {
        "get": {
            "summary": "Every set with its destinations",
            "operationId": "sets",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"sets": {"type": "array", "items": _ref("Set")}},
                    },
                    "Sets.",
                ),
                **_errors(401),
            },
        }
    },
    "/api/sets/{set}": {
        "get": {
            "summary": "One set",
            "operationId": "set",
            "parameters": [SET_PARAM],
            "responses": {"200": _json(_ref("Set"), "The set."), **_errors(401, 404)},
        }
    },
    "/api/sets/{set}/destinations/{uri}": {
        "get": {
            "summary": "One destination of a set",
            "operationId": "destination",
            "parameters": DEST_PARAMS,
            "responses": {
                "200": _json(_ref("Destination"), "The destination."),
                **_errors(401, 404),
            },
        }
    },
    "/api/sets/{set}/destinations/{uri}/drain": _action(
        "drain", "No new calls; calls in progress and in-dialog requests go on until they end."
    ),
    "/api/sets/{set}/destinations/{uri}/enable": _action(
        "enable", "Clear drain or disable: the probes decide again."
    ),
    "/api/sets/{set}/destinations/{uri}/disable": _action("disable", "No new calls."),
    "/api/sets/{set}/destinations/{uri}/weight": {
        "put": {
            "summary": "Change a destination's weight in one set (until the next reload); "
            "0: no new calls in this set, calls in progress go on",
            "operationId": "setWeight",
            "parameters": DEST_PARAMS,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "weight": {"type": "integer", "minimum": 0, "maximum": 1000000}
                            },
                            "required": ["weight"],
                        }
                    }
                },
            },
            "responses": {
                "200": _json(_ref("Destination"), "The destination after the change."),
                **_errors(400, 401, 403, 404),
            },
        }
    },
    "/api/events": {
        "get": {
            "summary": "Recent events: state changes, failovers, reloads, weight changes",
            "operationId": "events",
            "parameters": [
                {
                    "name": "after",
                    "in": "query",
                    "description": "Only events with a larger id.",
                    "schema": {"type": "integer", "default": 0},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "description": "At most this many, the newest (max 500).",
                    "schema": {"type": "integer", "default": 100},
                },
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "last_id": {"type": "integer"},
                            "events": {"type": "array", "items": _ref("Event")},
                        },
                    },
                    "Events, oldest first.",
                ),
                **_errors(400, 401),
            },
        }
    },
    "/api/history": {
        "get": {
            "summary": "Calls per second over the last five minutes",
            "operationId": "history",
            "responses": {"200": _json(_ref("History"), "History."), **_errors(401)},
        }
    },
    "/api/reload": {
        "post": {
            "summary": "Reload the config file (what SIGHUP does)",
            "description": "Sets and route rules change atomically; calls and transactions in "
            "progress keep their destinations; a removed destination drains. A config with "
            "problems is refused with every problem listed, and the running one stays.",
            "operationId": "reload",
            "responses": {
                "200": _json(_ref("ReloadOutcome"), "Reloaded."),
                **_errors(401, 403, 409, 422),
            },
        }
    },
    "/api/protection": {
        "get": {
            "summary": "Refusals by reason, bans in force, pending transactions",
            "operationId": "protection",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "description": "At most this many bans listed, those ending first (max 10000).",
                    "schema": {"type": "integer", "default": 100},
                }
            ],
            "responses": {
                "200": _json(_ref("Protection"), "Protection."),
                **_errors(400, 401),
            },
        }
    },
    "/api/bans": {
        "post": {
            "summary": "Ban a source: its requests are dropped until the ban ends",
            "description": "Every worker drops the host's requests, and the kernel too when "
            "[protection.nftables] is on. A ban in force that ends later stays as it is. "
            "Trusted hosts (destinations, trusted networks) cannot be banned.",
            "operationId": "ban",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "host": {"type": "string", "description": "An IP address."},
                                "seconds": {
                                    "type": "number",
                                    "exclusiveMinimum": 0,
                                    "maximum": 31536000,
                                },
                                "reason": {
                                    "type": "string",
                                    "maxLength": 100,
                                    "default": "operator",
                                },
                            },
                            "required": ["host", "seconds"],
                        }
                    }
                },
            },
            "responses": {
                "200": _json(_ref("Ban"), "The ban in force."),
                **_errors(
                    400,
                    401,
                    403,
                    409,
                    texts={409: "The host is trusted, or the ban table is full."},
                ),
            },
        }
    },
    "/api/bans/{host}": {
        "delete": {
            "summary": "Lift a ban (and forgive the source's offences)",
            "operationId": "unban",
            "parameters": [
                {"name": "host", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "host": {"type": "string"},
                            "lifted": {"type": "boolean"},
                        },
                    },
                    "Lifted.",
                ),
                **_errors(401, 403, 404, texts={404: "No ban on that host."}),
            },
        }
    },
    "/api/cluster": {
        "get": {
            "summary": "The cluster: members, Redis link, destination owners, channel",
            "operationId": "cluster",
            "responses": {"200": _json(_ref("Cluster"), "The cluster."), **_errors(401)},
        }
    },
    "/api/health": {
        "get": {
            "summary": "Is this node healthy (for route announcements and VRRP)?",
            "description": "Needs no token, like the OpenAPI document: it tells only whether "
            "the node is healthy and why not, and changes nothing. `siplb health` and "
            "`siplb announce` ask it.",
            "operationId": "health",
            "security": [],
            "responses": {
                "200": _json(_ref("Health"), "Healthy."),
                "503": _json(_ref("Health"), "Not healthy; `reasons` says why."),
            },
        }
    },
    "/api/node": {
        "post": {
            "summary": "Drain or resume the whole node",
            "description": "Drained, the node reads unhealthy (its route is withdrawn, a VRRP "
            "address moves away) and, in a cluster, the other nodes take its new calls while "
            "its calls finish here. Until resumed or restarted.",
            "operationId": "node",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"drain": {"type": "boolean"}},
                            "required": ["drain"],
                        }
                    }
                },
            },
            "responses": {
                "200": _json(_ref("Health"), "Changed; the node is healthy."),
                "503": _json(_ref("Health"), "Changed; the node is not healthy (drained)."),
                **_errors(400, 401, 403),
            },
        }
    },
    "/api/stream": {
        "get": {
            "summary": "Live updates for the dashboard (Server-Sent Events)",
            "description": "An `event: snapshot` (status, sets, events, history) when connected "
            "and whenever the table's layout changes, then an `event: tick` every second. A "
            "browser passes the token as `?token=`.",
            "operationId": "stream",
            "responses": {
                "200": {"description": "text/event-stream", "content": {"text/event-stream": {}}},
                **_errors(401),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics (text exposition format 0.0.4)",
            "operationId": "metrics",
            "responses": {
                "200": {"description": "Metrics.", "content": {"text/plain": {}}},
                **_errors(401),
            },
        }
    },
}

OPENAPI: JSON = {
    "openapi": "3.1.0",
    "info": {
        "title": "siplb admin API",
        "version": __version__,
        "description": "Status, destination sets and actions of a running siplb. Changes need "
        "the bearer token of [admin] token or token_file; when one is configured, reads need "
        "it too.",
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}
