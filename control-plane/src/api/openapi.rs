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
            "413": error_response("body over 16 KiB"),
            "429": error_response("this credential was refused too often: not audited (`Retry-After`)")
        }
    }})
}

fn cancel_op(summary: &str, params: &[&str]) -> Value {
    let mut parameters: Vec<Value> = params
        .iter()
        .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}, "description": "percent-encoded id (printable UTF-8, at most 256 bytes)"}))
        .collect();
    parameters.push(json!({"name": "wait", "in": "query", "required": false, "schema": {"type": "string"}, "description": "answer once every live edge applied the change, or after this long: `5`, `2.5`, `5s`, `500ms` (at most 60 s)"}));
    json!({
        "summary": summary,
        "description": "Requires `sessions:revoke_all` on the tenant (a global admin for every tenant). Audited, refusals too. `epoch_ms` in the answer is the time the cancelled schedule was set for.",
        "security": [{"bearer": []}],
        "parameters": parameters,
        "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RevokeBody"}}}},
        "responses": {
            "200": {"description": "cancelled (committed)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RevokeAnswer"}}}},
            "400": error_response("bad id, body or query"),
            "401": error_response("no or invalid credential"),
            "403": error_response("the credential lacks the permission or tenant (audited)"),
            "404": error_response("no scheduled logout to cancel (`no_schedule`)"),
            "409": error_response("the scheduled logout's time has passed: it took effect and cannot be undone (`schedule_passed`, audited)"),
            "413": error_response("body over 16 KiB")
        }
    })
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
        responses["429"] =
            error_response("this credential was refused too often: not audited (`Retry-After`)");
    }
    op["responses"] = responses;
    json!({"get": op})
}

fn idp_name() -> Value {
    json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}, "example": "demo",
           "description": "the IdP's `name` in --idp-config"})
}

fn no_store() -> Value {
    json!({"schema": {"type": "string", "enum": ["no-store"]}})
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
                 "description": "Force logout at the edge: admin API, the edges' sync API, operations. Every error is `{\"error\", \"detail\"}`, but for the SET push receiver's RFC 8935 `{\"err\", \"description\"}`."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "admin token, API key, or admin JWT (admin routes); an edge token (/v1/sync): the edge's own, or the shared demo token"},
                "ssf_push": {"type": "http", "scheme": "bearer",
                "description": "an IdP's Shared Signals push token (its `ssf.bearer_token_env` / `ssf.bearer_token_file`)"}},
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
                "EdgesAnswer": {"type": "object", "properties": {"stream": {"type": "string"}, "version": {"type": "integer"},
                    "rollback": {"type": "object", "description": "the last rollback noticed (a restore from a backup, a failover)", "properties": {
                        "at_ms": {"type": "integer"}, "previous_stream": {"type": "string"}, "stream": {"type": "string"}, "reason": {"type": "string"}}},
                    "edges": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "string", "description": "the edge credential's name, or the `?edge=` given with the shared demo token"},
                    "live": {"type": "boolean"}, "instances": {"type": "integer", "description": "instances folded in (a Worker's isolates, Envoys sharing a credential)"},
                    "credential": {"type": ["string", "null"], "description": "the edge token's id; null: the shared demo token"},
                    "stream": {"type": ["string", "null"]}, "applied_version": {"type": "integer"}, "lag": {"type": "integer"},
                    "first_seen_ms": {"type": "integer"}, "last_seen_ms": {"type": "integer"}, "remote_addr": {"type": ["string", "null"]}}}}}},
                "AuditAnswer": {"type": "object", "properties": {"entries": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "at_ms": {"type": "integer"}, "actor": {"type": "string"}, "action": {"type": "string"},
                    "outcome": {"enum": ["ok", "denied"]}, "target": {"$ref": "#/components/schemas/Target"}, "reason": {"type": ["string", "null"]},
                    "source": {"type": ["string", "null"]}, "request_id": {"type": ["string", "null"]}, "version": {"type": "integer"},
                    "prev_hash": {"type": "string"}, "hash": {"type": "string"}}}}}},
                "SyncResponse": {"type": "object", "properties": {"stream": {"type": "string"}, "version": {"type": "integer"}, "snapshot": {"type": "boolean"},
                    "changes": {"type": "array", "items": {"type": "object"}}, "max_session_lifetime_s": {"type": "integer"},
                    "next": {"type": "string", "description": "a snapshot page that is not the last: the cursor of the next"},
                    "tag": {"type": "string", "description": "the tag of `version`: sent back with `since`"}}},
                "EdgeToken": {"type": "object", "required": ["id", "edge", "created_ms", "created_by"], "properties": {
                    "id": {"type": "string"}, "edge": {"type": "string"}, "created_ms": {"type": "integer"}, "created_by": {"type": "string"},
                    "revoked_ms": {"type": ["integer", "null"]}}},
                "EdgeTokenBody": {"type": "object", "required": ["edge"], "additionalProperties": false, "properties": {
                    "edge": {"type": "string", "minLength": 1}, "reason": {"type": "string", "maxLength": 1024}}},
                "EdgeTokenCreated": {"type": "object", "required": ["id", "edge", "token", "created_ms", "audit"], "properties": {
                    "id": {"type": "string"}, "edge": {"type": "string"}, "token": {"type": "string", "description": "shown this once; the store keeps its SHA-256"},
                    "created_ms": {"type": "integer"}, "audit": {"$ref": "#/components/schemas/AuditHead"}}},
                "EdgeTokensAnswer": {"type": "object", "required": ["edge_tokens"], "properties": {"edge_tokens": {"type": "array", "items": {"$ref": "#/components/schemas/EdgeToken"}}}},
                "EdgeTokenRevoked": {"type": "object", "required": ["edge", "revoked", "audit"], "properties": {
                    "edge": {"type": "string"}, "revoked": {"type": "integer"}, "audit": {"$ref": "#/components/schemas/AuditHead"}}},
                "ReasonBody": {"type": "object", "additionalProperties": false, "properties": {"reason": {"type": "string", "maxLength": 1024}}},
                "Health": {"type": "object", "required": ["status"], "additionalProperties": false, "properties": {"status": {"type": "string"}}},
                "IdpLogoutAnswer": {"type": "object", "required": ["target", "epoch_ms", "version"], "properties": {
                    "target": {"$ref": "#/components/schemas/Target"}, "epoch_ms": {"type": "integer"}, "version": {"type": "integer"}}},
                "SetError": {"type": "object", "required": ["err", "description"], "properties": {
                    "err": {"enum": ["invalid_request", "invalid_key", "invalid_issuer", "invalid_audience", "authentication_failed", "access_denied", "temporarily_unavailable"]},
                    "description": {"type": "string"}}}
            }
        },
        "paths": {
            "/v1/tenants/{tenant}/users/{user}/logout": write_op("End every session of one user", "sessions:revoke", &["tenant", "user"]),
            "/v1/tenants/{tenant}/logout": write_op("End every session of one tenant", "sessions:revoke_all", &["tenant"]),
            "/v1/tenants/{tenant}/sessions/{sid}/revoke": write_op("End one session", "sessions:revoke", &["tenant", "sid"]),
            "/v1/logout": write_op("End every session of every tenant (global admins only)", "sessions:revoke_all", &[]),
            "/v1/tenants/{tenant}/scheduled-logout": {"delete": cancel_op("Cancel the tenant's pending scheduled logout", &["tenant"])},
            "/v1/scheduled-logout": {"delete": cancel_op("Cancel the pending scheduled logout of every tenant (global admins only)", &[])},
            "/v1/tenants/{tenant}/revocations": read_op("The tenant's live entries and the global one", Some("revocations:read"), "RevocationsAnswer",
                vec![json!({"name": "tenant", "in": "path", "required": true, "schema": {"type": "string"}})]),
            "/v1/edges": read_op("Each edge's applied version, lag, liveness, last seen", Some("edges:read"), "EdgesAnswer", vec![]),
            "/v1/edge-tokens": {
                "post": {"summary": "A new per-edge token (answered once; stored hashed; audited)",
                    "description": "Requires `edges:manage` on every tenant (`*`). A refusal is audited.",
                    "security": [{"bearer": []}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EdgeTokenBody"}}}},
                    "responses": {
                        "200": {"description": "created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EdgeTokenCreated"}}}},
                        "400": error_response("bad body or edge name"),
                        "401": error_response("no or invalid credential"),
                        "403": error_response("not a global `edges:manage` admin (audited)"),
                        "429": error_response("this credential was refused too often: not audited (`Retry-After`)"),
                        "413": error_response("body over 16 KiB"),
                        "415": error_response("body not JSON")}},
                "get": {"summary": "Every edge token (never the token itself)",
                    "description": "Requires `edges:manage` on every tenant (`*`).",
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EdgeTokensAnswer"}}}},
                        "401": error_response("no or invalid credential"),
                        "403": error_response("not a global `edges:manage` admin (audited)"),
                        "429": error_response("this credential was refused too often: not audited (`Retry-After`)")}}
            },
            "/v1/edge-tokens/{edge}/revoke": {"post": {"summary": "End every token of one edge (audited): it stops syncing at once",
                "description": "Requires `edges:manage` on every tenant (`*`).",
                "security": [{"bearer": []}],
                "parameters": [{"name": "edge", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReasonBody"}}}},
                "responses": {
                    "200": {"description": "revoked", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EdgeTokenRevoked"}}}},
                    "400": error_response("bad edge name or body"),
                    "401": error_response("no or invalid credential"),
                    "403": error_response("not a global `edges:manage` admin (audited)"),
                        "429": error_response("this credential was refused too often: not audited (`Retry-After`)"),
                    "404": error_response("the edge has no live token"),
                    "413": error_response("body over 16 KiB"),
                    "415": error_response("body not JSON")}}},
            "/v1/audit": read_op("The hash-chained audit log, newest first (a tenant admin sees its tenant only)", Some("audit:read"), "AuditAnswer", vec![
                query("limit", "integer", "1..=1000, default 100"),
                query("tenant", "string", "only this tenant's entries"),
                query("actor", "string", "only this actor's"),
                query("action", "string", "only this action"),
                query("outcome", "string", "`ok` or `denied`"),
                query("since_ms", "integer", "at or after (ms since the Unix epoch)"),
                query("until_ms", "integer", "at or before")]),
            "/v1/sync": {"get": {"summary": "The edges' long-poll (edge tokens only)", "security": [{"bearer": []}],
                "parameters": [query("since", "integer", "the version the edge applied (its receipt)"), query("wait", "integer", "seconds to hold (at most 60)"),
                               query("stream", "string", "the stream the edge holds"),
                               query("tag", "string", "the tag of `since`, as answered with it: an edge on a history this store lost (a restore, a failover) gets a snapshot of a new stream"),
                               query("edge", "string", "with the edge's own token: which instance (a Worker isolate, one of several Envoys); with the shared demo token (then required): the edge's id"),
                               query("limit", "integer", "answer snapshots (and deltas larger than this) as snapshot pages of at most this many changes (1..100000)"),
                               query("snapshot", "integer", "resuming a paged snapshot: its version (with `after`)"),
                               query("after", "string", "resuming a paged snapshot: the `next` cursor of the previous page")],
                "responses": {"200": {"description": "a delta or a snapshot", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SyncResponse"}}}},
                              "401": error_response("no or invalid credential"), "403": error_response("not the edge token")}}},
            "/v1/idp/{name}/backchannel-logout": {"post": {
                "summary": "OpenID Connect Back-Channel Logout 1.0: the IdP `name` of --idp-config posts a logout token",
                "description": "The logout token authenticates the request (its signature by the IdP's keys). `sid` revokes that session; `sub` alone logs the user out. Audited with the actor `idp:<name>`. Every answer carries `Cache-Control: no-store`.",
                "security": [],
                "parameters": [idp_name()],
                "requestBody": {"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {
                    "type": "object", "required": ["logout_token"], "properties": {"logout_token": {"type": "string"}}}}}},
                "responses": {
                    "200": {"description": "revoked (committed)", "headers": {"Cache-Control": no_store()},
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IdpLogoutAnswer"}}}},
                    "400": {"description": "refused, nothing revoked: `error` names what failed (invalid_aud, invalid_iat, nonce_present, jti_replayed, invalid_alg, invalid_signature, body_too_large, invalid_content_type, …)",
                            "headers": {"Cache-Control": no_store()},
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                    "404": error_response("no such IdP, or it takes no back-channel logouts"),
                    "503": error_response("the IdP's keys cannot be fetched now (`Retry-After`)")
                }}},
            "/v1/idp/{name}/events": {"post": {
                "summary": "Shared Signals push delivery (RFC 8935): the IdP `name`'s transmitter posts a Security Event Token",
                "description": "`Authorization: Bearer <the IdP's ssf push token>`. CAEP session-revoked revokes the subject's session or user; credential-change (where honoured) logs the user out; other events are accepted and ignored. Audited with the actor `idp:<name>`.",
                "security": [{"ssf_push": []}],
                "parameters": [idp_name()],
                "requestBody": {"required": true, "content": {"application/secevent+jwt": {"schema": {"type": "string"}}}},
                "responses": {
                    "202": {"description": "accepted (a revocation is committed first)"},
                    "400": {"description": "refused, nothing revoked (RFC 8935 §2.3)",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SetError"}}}},
                    "404": error_response("no such IdP, or it has no `ssf` section"),
                    "503": {"description": "the transmitter's keys cannot be fetched now (`Retry-After`)",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SetError"}}}}
                }}},
            "/healthz": read_op("Liveness: the store answers", None, "Health", vec![]),
            "/readyz": read_op("Readiness: the store answers and the server is not shutting down (503 otherwise)", None, "Health", vec![]),
            "/metrics": {"get": {"summary": "Prometheus metrics (OpenMetrics text); only on --metrics-listen when that is set", "responses": {"200": {"description": "OpenMetrics text exposition", "content": {"application/openmetrics-text": {}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}}
        }
    })
}
