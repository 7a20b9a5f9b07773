//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json` and checked
//! in as `control-plane/openapi.json` (a test fails when the two differ; regenerate with
//! `UPDATE_OPENAPI=1 cargo test -p epochgate-control-plane openapi`).

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn write_op(summary: &str, scope: &str, params: &[&str]) -> Value {
    let mut parameters: Vec<Value> = params
        .iter()
        .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}, "description": "percent-encoded id (printable UTF-8, at most 256 bytes)"}))
        .collect();
    parameters.push(json!({"name": "wait", "in": "query", "required": false, "schema": {"type": "string"}, "description": "answer once every live edge applied the change, or after this long: `5`, `2.5`, `5s`, `500ms` (at most 60 s)"}));
    json!({"post": {
        "summary": summary,
        "description": format!("Requires `{scope}` on the tenant (a global admin for every tenant). A refusal is audited."),
        "security": [{"bearer": []}],
        "parameters": parameters,
        "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RevokeBody"}}}},
        "responses": {
            "200": {"description": "committed", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RevokeAnswer"}}}},
            "400": error_response("bad id, body or query"),
            "401": error_response("no or invalid credential"),
            "403": error_response("the credential lacks the permission or tenant (audited)"),
            "413": error_response("body over 16 KiB")
        }
    }})
}

fn read_op(summary: &str, scope: Option<&str>, schema: &str, params: Vec<Value>) -> Value {
    let mut responses = json!({
        "200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}},
        "400": error_response("bad query"),
    });
    let mut op = json!({"summary": summary, "parameters": params});
    if let Some(scope) = scope {
        op["description"] = json!(format!("Requires `{scope}`."));
        op["security"] = json!([{"bearer": []}]);
        responses["401"] = error_response("no or invalid credential");
        responses["403"] = error_response("the credential may not read this");
    }
    op["responses"] = responses;
    json!({"get": op})
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": {"type": ty}, "description": description})
}

/// The document.
pub fn document() -> Value {
    let mut doc = base();
    for (name, schema) in session_schemas() {
        doc["components"]["schemas"][name] = schema;
    }
    for (path, op) in session_paths() {
        doc["paths"][path] = op;
    }
    doc
}

/// The users and sessions the edges report: their schemas …
fn session_schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "UsersAnswer",
            json!({"type": "object", "required": ["tenant", "users", "sessions", "total_users", "total_sessions", "truncated"], "properties": {"tenant": {"type": "string"}, "users": {"type": "array", "items": {"type": "object", "required": ["user", "sessions", "devices", "last_seen_ms"], "properties": {"user": {"type": "string"}, "sessions": {"type": "integer", "description": "active sessions (seen within --session-idle, not revoked)"}, "devices": {"type": "array", "items": {"type": "string"}}, "last_seen_ms": {"type": "integer"}}}}, "sessions": {"type": "integer", "description": "active sessions of the listed users"}, "total_users": {"type": "integer"}, "total_sessions": {"type": "integer"}, "truncated": {"type": "boolean"}}}),
        ),
        (
            "SessionsAnswer",
            json!({"type": "object", "required": ["tenant", "user", "sessions"], "properties": {"tenant": {"type": "string"}, "user": {"type": "string"}, "sessions": {"type": "array", "items": {"type": "object", "properties": {"sid": {"type": ["string", "null"]}, "session_start": {"type": "integer"}, "first_seen_ms": {"type": "integer"}, "last_seen_ms": {"type": "integer"}, "requests": {"type": "integer"}, "device": {"type": "string"}, "address": {"type": ["string", "null"]}, "edge": {"type": "string"}, "revoked": {"type": "boolean"}, "revoked_at_ms": {"type": ["integer", "null"]}}}}}}),
        ),
        (
            "SessionReport",
            json!({"type": "object", "required": ["sessions"], "additionalProperties": false, "properties": {"sessions": {"type": "array", "maxItems": 500, "items": {"type": "object", "additionalProperties": false, "required": ["tenant", "user", "session_start", "first_seen_ms", "last_seen_ms", "requests", "device"], "properties": {"tenant": {"type": "string"}, "user": {"type": "string"}, "sid": {"type": "string"}, "session_start": {"type": "integer"}, "first_seen_ms": {"type": "integer", "minimum": 0}, "last_seen_ms": {"type": "integer", "minimum": 0}, "requests": {"type": "integer", "minimum": 0}, "device": {"type": "string", "maxLength": 64}, "address": {"type": "string"}}}}}}),
        ),
        (
            "ReportAnswer",
            json!({"type": "object", "required": ["accepted"], "properties": {"accepted": {"type": "integer"}}}),
        ),
    ]
}

/// … and their routes.
fn session_paths() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/v1/tenants/{tenant}/users",
            read_op("The users with active sessions (seen by the edges within --session-idle, not revoked), most recently seen first", Some("sessions:read"), "UsersAnswer", vec![
                json!({"name": "tenant", "in": "path", "required": true, "schema": {"type": "string"}}),
                query("q", "string", "only users whose id contains this (case-insensitive)"),
                query("limit", "integer", "1..=1000, default 100")]),
        ),
        (
            "/v1/tenants/{tenant}/users/{user}/sessions",
            read_op("One user's sessions seen within --session-idle, revoked ones marked", Some("sessions:read"), "SessionsAnswer", vec![
                json!({"name": "tenant", "in": "path", "required": true, "schema": {"type": "string"}}),
                json!({"name": "user", "in": "path", "required": true, "schema": {"type": "string"}})]),
        ),
        (
            "/v1/sync/sessions",
            json!({"post": {"summary": "An edge's batch of the sessions it saw (edge token only)", "security": [{"bearer": []}],
                "parameters": [{"name": "edge", "in": "query", "required": true, "schema": {"type": "string"}, "description": "the reporting edge's id"}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SessionReport"}}}},
                "responses": {"200": {"description": "merged", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReportAnswer"}}}},
                              "400": error_response("a bad entry (named), or more than 500"), "401": error_response("no or invalid credential"),
                              "403": error_response("not the edge token"), "413": error_response("body over 512 KiB"),
                              "415": error_response("not JSON")}}}),
        ),
    ]
}

fn base() -> Value {
    let target = json!({"type": "object", "required": ["scope"], "properties": {
        "scope": {"enum": ["global", "tenant", "user", "session", "scheduled_global", "scheduled_tenant"]},
        "tenant": {"type": "string"}, "user": {"type": "string"}, "sid": {"type": "string"}}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Epochgate control plane", "version": crate::VERSION,
                 "description": "Force logout at the edge: admin API, the edges' sync API, operations. Every error is `{\"error\", \"detail\"}`."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "admin token, API key, or admin JWT (admin routes); edge token (/v1/sync)"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "detail"], "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}},
                "Target": target,
                "RevokeBody": {"type": "object", "additionalProperties": false, "properties": {"reason": {"type": "string", "maxLength": 1024},
                    "at": {"type": "string", "format": "date-time", "description": "tenant and global logouts: log out at this future time (at most 31 days ahead); until then edges announce it in an `epochgate-logout-at` response header"}}},
                "AuditHead": {"type": "object", "required": ["id", "hash"], "properties": {"id": {"type": "integer"}, "hash": {"type": "string"}}},
                "Propagation": {"type": "object", "required": ["edges", "acked", "lagging", "elapsed_ms"], "properties": {
                    "edges": {"type": "integer", "description": "live edges (seen within --edge-live-window)"},
                    "acked": {"type": "integer", "description": "live edges that applied this version"},
                    "lagging": {"type": "array", "items": {"type": "string"}},
                    "elapsed_ms": {"type": "integer"}}},
                "RevokeAnswer": {"type": "object", "required": ["target", "epoch_ms", "version", "audit"], "properties": {
                    "target": {"$ref": "#/components/schemas/Target"},
                    "epoch_ms": {"type": "integer"}, "version": {"type": "integer"},
                    "audit": {"$ref": "#/components/schemas/AuditHead"},
                    "propagation": {"$ref": "#/components/schemas/Propagation"},
                    "warnings": {"type": "array", "items": {"type": "string"}}}},
                "RevocationsAnswer": {"type": "object", "properties": {"tenant": {"type": "string"}, "revocations": {"type": "array", "items": {"type": "object"}}}},
                "EdgesAnswer": {"type": "object", "properties": {"stream": {"type": "string"}, "version": {"type": "integer"}, "edges": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "string"}, "live": {"type": "boolean"}, "stream": {"type": ["string", "null"]}, "applied_version": {"type": "integer"}, "lag": {"type": "integer"},
                    "first_seen_ms": {"type": "integer"}, "last_seen_ms": {"type": "integer"}, "remote_addr": {"type": ["string", "null"]}}}}}},
                "AuditAnswer": {"type": "object", "properties": {"entries": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "at_ms": {"type": "integer"}, "actor": {"type": "string"}, "action": {"type": "string"},
                    "outcome": {"enum": ["ok", "denied"]}, "target": {"$ref": "#/components/schemas/Target"}, "reason": {"type": ["string", "null"]},
                    "source": {"type": ["string", "null"]}, "request_id": {"type": ["string", "null"]}, "version": {"type": "integer"},
                    "prev_hash": {"type": "string"}, "hash": {"type": "string"}}}}}},
                "SyncResponse": {"type": "object", "properties": {"stream": {"type": "string"}, "version": {"type": "integer"}, "snapshot": {"type": "boolean"},
                    "changes": {"type": "array", "items": {"type": "object"}}, "max_session_lifetime_s": {"type": "integer"},
                    "next": {"type": "string", "description": "a snapshot page that is not the last: the cursor of the next"}}},
                "Health": {"type": "object", "properties": {"status": {"type": "string"}, "stream": {"type": "string"}, "version": {"type": "integer"}}}
            }
        },
        "paths": {
            "/v1/tenants/{tenant}/users/{user}/logout": write_op("End every session of one user", "sessions:revoke", &["tenant", "user"]),
            "/v1/tenants/{tenant}/logout": write_op("End every session of one tenant", "sessions:revoke_all", &["tenant"]),
            "/v1/tenants/{tenant}/sessions/{sid}/revoke": write_op("End one session", "sessions:revoke", &["tenant", "sid"]),
            "/v1/logout": write_op("End every session of every tenant (global admins only)", "sessions:revoke_all", &[]),
            "/v1/tenants/{tenant}/revocations": read_op("The tenant's live entries and the global one", Some("revocations:read"), "RevocationsAnswer",
                vec![json!({"name": "tenant", "in": "path", "required": true, "schema": {"type": "string"}})]),
            "/v1/edges": read_op("Each edge's applied version, lag, liveness, last seen", Some("edges:read"), "EdgesAnswer", vec![]),
            "/v1/audit": read_op("The hash-chained audit log, newest first (a tenant admin sees its tenant only)", Some("audit:read"), "AuditAnswer", vec![
                query("limit", "integer", "1..=1000, default 100"),
                query("tenant", "string", "only this tenant's entries"),
                query("actor", "string", "only this actor's"),
                query("action", "string", "only this action"),
                query("outcome", "string", "`ok` or `denied`"),
                query("since_ms", "integer", "at or after (ms since the Unix epoch)"),
                query("until_ms", "integer", "at or before")]),
            "/v1/sync": {"get": {"summary": "The edges' long-poll (edge token only)", "security": [{"bearer": []}],
                "parameters": [query("since", "integer", "the version the edge applied (its receipt)"), query("wait", "integer", "seconds to hold (at most 60)"),
                               query("stream", "string", "the stream the edge holds"), {"name": "edge", "in": "query", "required": true, "schema": {"type": "string"}},
                               query("limit", "integer", "answer snapshots (and deltas larger than this) as snapshot pages of at most this many changes (1..100000)"),
                               query("snapshot", "integer", "resuming a paged snapshot: its version (with `after`)"),
                               query("after", "string", "resuming a paged snapshot: the `next` cursor of the previous page")],
                "responses": {"200": {"description": "a delta or a snapshot", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SyncResponse"}}}},
                              "401": error_response("no or invalid credential"), "403": error_response("not the edge token")}}},
            "/healthz": read_op("Liveness: the store answers", None, "Health", vec![]),
            "/readyz": read_op("Readiness: the store answers and the server is not shutting down (503 otherwise)", None, "Health", vec![]),
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition", "content": {"text/plain": {}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}}
        }
    })
}
