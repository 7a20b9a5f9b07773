//! `GET /v1/sync`: the edges' long-poll.
//!
//! The order of operations is the protocol's correctness:
//! 1. subscribe to the version watch,
//! 2. then read the store.
//!
//! A commit landing between the two bumps the watch after the subscription, so the wait
//! in step 3 sees it at once; reading first and subscribing after could sleep through it
//! for the whole `wait` — a logout arriving late at an edge.
//!
//! The read also checks that the edge's `since` belongs to this store's history (its
//! `tag`): after a restore from a backup or a failover, an edge ahead of the store, or on
//! versions the store wrote again with other content, is on a history this store lost.
//! The store then starts a new stream (once, whichever edge or replica notices first),
//! says so in the log and in `GET /v1/edges`, and the edge gets a snapshot of it — which
//! it merges into what it holds, so no logout it applied is lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use epochgate_core::sync::SyncResponse;
use serde::Deserialize;

use super::extract::{check_id, judge_credential, ApiQuery, EdgeAuth, EdgeIdentity, RemoteAddr};
use super::ApiError;
use crate::config::MAX_WAIT_S;
use crate::fanout::SyncKey;
use crate::now_ms;
use crate::state::AppState;
use crate::store::{announced_horizon_s, EdgePosition, EdgeReceipt, PageRequest, SyncBatch};
use epochgate_core::state::Target;

/// The query of `GET /v1/sync`.
#[derive(Debug, Deserialize)]
pub struct SyncQuery {
    /// The version the edge has applied (0: nothing yet).
    #[serde(default)]
    pub since: u64,
    /// Seconds to hold the request when nothing is new (default 0, capped at 60).
    #[serde(default)]
    pub wait: u64,
    /// The stream the edge holds; another stream gets a snapshot.
    pub stream: Option<String>,
    /// The tag of `since` (as answered with it): proves which history it is of.
    pub tag: Option<String>,
    /// The edge's id, for its receipt in `GET /v1/edges`. With the edge's own credential
    /// the edge is the credential's and this names the instance (a Worker isolate, one
    /// Envoy of several); with the shared demo token it names the edge.
    pub edge: Option<String>,
    /// Snapshots in pages of at most this many changes (see [`PageRequest`]).
    pub limit: Option<usize>,
    /// Resuming a paged snapshot: its version …
    pub snapshot: Option<u64>,
    /// … and the cursor (`next`) of the page to continue after.
    pub after: Option<String>,
}

/// The largest page an edge may ask for.
pub const MAX_PAGE: usize = 100_000;

fn page_request(q: &SyncQuery) -> Result<Option<PageRequest>, ApiError> {
    let Some(limit) = q.limit else {
        if q.snapshot.is_some() || q.after.is_some() {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`snapshot` and `after` go with `limit`",
            ));
        }
        return Ok(None);
    };
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` must be between 1 and {MAX_PAGE}"),
        ));
    }
    let resume = match (q.snapshot, q.after.as_deref()) {
        (None, None) => None,
        (Some(v), Some(after)) => {
            let target = Target::from_key(after).ok_or_else(|| {
                ApiError::bad_request("invalid_query", "`after` is not a cursor this server gave")
            })?;
            Some((v, target))
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`snapshot` and `after` go together",
            ))
        }
    };
    Ok(Some(PageRequest { limit, resume }))
}

/// Why a long-poll stopped waiting.
enum Woken {
    /// A commit: the watch's version.
    Changed(u64),
    TimedOut,
    ShuttingDown,
}

/// Which edge a request of an edge credential is from: its credential's edge (the
/// query's `edge` then names the instance), or with the shared demo token the query's
/// `edge` (required). Never from the query alone: an edge cannot report — acknowledge
/// `?wait=` writes, or sessions — as another.
pub(crate) struct WhichEdge {
    pub edge: String,
    pub instance: String,
    pub credential: Option<String>,
}

pub(crate) fn which_edge(
    identity: &EdgeIdentity,
    query_edge: Option<&str>,
) -> Result<WhichEdge, ApiError> {
    Ok(match identity {
        EdgeIdentity::Credential { credential, .. } => WhichEdge {
            edge: credential.edge.clone(),
            instance: query_edge.unwrap_or_default().to_string(),
            credential: Some(credential.id.clone()),
        },
        EdgeIdentity::Shared => WhichEdge {
            edge: query_edge
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_query",
                        "`edge` is required: the edge's id, so that it shows in /v1/edges",
                    )
                })?
                .to_string(),
            instance: String::new(),
            credential: None,
        },
    })
}

/// `GET /v1/sync?since=V&wait=S&stream=X&edge=E`.
pub async fn sync(
    State(state): State<AppState>,
    EdgeAuth(identity): EdgeAuth,
    remote: RemoteAddr,
    ApiQuery(q): ApiQuery<SyncQuery>,
) -> Result<Response, ApiError> {
    let page = page_request(&q)?;
    if let Some(e) = &q.edge {
        check_id("edge", e)?;
    }
    let WhichEdge {
        edge,
        instance,
        credential,
    } = which_edge(&identity, q.edge.as_deref())?;
    let wait = Duration::from_secs(q.wait.min(MAX_WAIT_S));
    state.metrics().sync_request();

    // 1. Subscribe before reading (see the module doc).
    let mut versions = state.store().subscribe();
    let subscribed_at = *versions.borrow();

    // The receipt: `since` is what this edge has applied, committed with the receipts of
    // the polls arriving with it (see [`crate::fanout::Receipts`]). A failure here must
    // not stop the edge from syncing, so it is logged, not answered.
    let receipt = EdgeReceipt {
        edge: edge.clone(),
        instance,
        credential,
        stream: q.stream.clone(),
        applied_version: q.since,
        now_ms: now_ms(),
        remote_addr: remote.0.map(|a| a.to_string()),
    };
    state.record_receipt(receipt).await;

    // 2. Read — shared with the polls asking the same now (see [`crate::fanout`]).
    let key = SyncKey {
        since: q.since,
        stream: q.stream.clone(),
        tag: q.tag.clone(),
        limit: q.limit,
        snapshot: q.snapshot,
        after: q.after.clone(),
    };
    let position = EdgePosition {
        since: q.since,
        stream: q.stream.clone(),
        tag: q.tag.clone(),
        edge: edge.clone(),
    };
    let first = shared_batch(&state, subscribed_at, &key, &position, &page).await?;
    if let Some(why) = first.batch.diverged.clone() {
        // The store was rolled back under this edge: a new stream, then its snapshot.
        // Rare, and per edge: read on its own.
        match state
            .store()
            .rotate_stream(first.batch.stream.clone(), why.clone(), now_ms())
            .await?
        {
            Some(r) => tracing::warn!(
                previous_stream = %r.previous_stream,
                stream = %r.stream,
                "the store was rolled back (restored from a backup, or failed over): {why}; \
                 started stream {} — edges merge it into what they hold, so logouts they \
                 applied stay in force; logouts the store lost must be issued again \
                 (`epochgate audit verify --anchor` names them)",
                r.stream
            ),
            None => tracing::info!("rollback already handled: {why}"),
        }
        state.metrics().sync_store_read();
        let batch = state.store().sync_paged(position, page).await?;
        return Ok(SharedBatch::new(batch).respond(&state));
    }
    let up_to_date = !first.batch.snapshot && first.batch.version == q.since;
    if !up_to_date || wait.is_zero() {
        return Ok(first.respond(&state));
    }

    // 3. Hold until a commit, the deadline, or shutdown.
    let woken = {
        let _open = state.metrics().open_long_poll();
        let mut shutdown = state.shutdown_signal();
        let since = q.since;
        tokio::select! {
            changed = versions.wait_for(|v| *v > since) => match changed {
                Ok(v) => Woken::Changed(*v),
                // The store is gone (shutting down): answer what we have.
                Err(_) => Woken::ShuttingDown,
            },
            _ = tokio::time::sleep(wait) => Woken::TimedOut,
            _ = shutdown.wait_for(|s| *s) => Woken::ShuttingDown,
        }
    };
    match woken {
        Woken::Changed(at) => {
            // Revoked while it waited: what changed is not for it any more.
            if let EdgeIdentity::Credential { credential, .. } = &identity {
                still_live(&state, at, &credential.id).await?;
            }
            let changed = shared_batch(&state, at, &key, &position, &page).await?;
            Ok(changed.respond(&state))
        }
        // An empty delta at the same version: the edge polls again (or, on shutdown,
        // reconnects to whichever control plane comes up).
        Woken::TimedOut | Woken::ShuttingDown => Ok(first.respond(&state)),
    }
}

/// A store read answered to every poll that asked the same as of one watch version.
pub(crate) struct SharedBatch {
    batch: SyncBatch,
    /// The body, serialized once per announced horizon (a number of seconds that changes
    /// only while the horizon grows after a lowered lifetime, see
    /// [`announced_horizon_s`]): byte-identical for every poll that shares it.
    body: std::sync::Mutex<Option<(u64, Bytes)>>,
}

impl SharedBatch {
    fn new(batch: SyncBatch) -> Self {
        SharedBatch {
            batch,
            body: std::sync::Mutex::new(None),
        }
    }

    fn respond(&self, state: &AppState) -> Response {
        let horizon = announced_horizon_s(
            state.config().max_session_lifetime_s,
            self.batch.compacted_before_ms,
            now_ms(),
        );
        let mut body = self
            .body
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = match &*body {
            Some((h, bytes)) if *h == horizon => bytes.clone(),
            _ => {
                let b = &self.batch;
                let answer = SyncResponse {
                    stream: b.stream.clone(),
                    version: b.version,
                    snapshot: b.snapshot,
                    changes: b.changes.clone(),
                    max_session_lifetime_s: horizon,
                    next: b.next.clone(),
                    tag: b.tag.clone(),
                };
                match serde_json::to_vec(&answer) {
                    Ok(v) => {
                        let bytes = Bytes::from(v);
                        *body = Some((horizon, bytes.clone()));
                        bytes
                    }
                    Err(err) => {
                        return ApiError::internal("cannot serialize a sync answer", &err)
                            .into_response()
                    }
                }
            }
        };
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response()
    }
}

/// The answer to `key` as of watch version `at`: read once for every poll asking it now.
async fn shared_batch(
    state: &AppState,
    at: u64,
    key: &SyncKey,
    position: &EdgePosition,
    page: &Option<PageRequest>,
) -> Result<SharedAnswer, ApiError> {
    let cell = state.sync_answers().cell(at, key.clone());
    let batch = cell
        .get_or_try_init(|| async {
            state.metrics().sync_store_read();
            let batch = state
                .store()
                .sync_paged(position.clone(), page.clone())
                .await?;
            Ok::<_, ApiError>(Arc::new(SharedBatch::new(batch)))
        })
        .await?
        .clone();
    if batch.batch.snapshot {
        state.sync_answers().weaken(key);
    }
    Ok(SharedAnswer {
        _cell: cell,
        shared: batch,
    })
}

/// A shared answer and its cell: held while the poll waits, so that polls arriving with
/// the same question share it too.
struct SharedAnswer {
    _cell: Arc<tokio::sync::OnceCell<Arc<SharedBatch>>>,
    shared: Arc<SharedBatch>,
}

impl std::ops::Deref for SharedAnswer {
    type Target = SharedBatch;
    fn deref(&self) -> &SharedBatch {
        &self.shared
    }
}

/// Whether the credential `id` is still live as of watch version `at`: the credentials
/// are read once for all the polls woken by that version (not once per poll).
async fn still_live(state: &AppState, at: u64, id: &str) -> Result<(), ApiError> {
    let cell = state.credentials_at().cell(at, ());
    let credentials = cell
        .get_or_try_init(|| async {
            state.metrics().sync_store_read();
            let all = state.store().edge_credentials().await?;
            Ok::<_, ApiError>(Arc::new(
                all.into_iter()
                    .map(|c| (c.id.clone(), c))
                    .collect::<HashMap<_, _>>(),
            ))
        })
        .await?;
    judge_credential(credentials.get(id).cloned()).map(|_| ())
}
