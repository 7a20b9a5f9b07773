//! The admin commands: each calls the HTTP API and prints a sentence (or, with `--json`,
//! the server's raw answer). Errors say what to do next: start the server, fix the token,
//! or what the server said was wrong.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use epochgate_core::ids::{percent_encode, validate_id};
use epochgate_core::state::Target;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::api::extract::ACTOR_HEADER;
use std::io::IsTerminal;

use crate::api::edge_tokens::{CreatedAnswer, ListAnswer, RevokedAnswer};
use crate::api::{AuditAnswer, EdgesAnswer, RevocationsAnswer, RevokeAnswer};
use crate::cli::{
    ApiKeyArgs, ApiKeyCommand, ApiKeyCreateArgs, AuditArgs, AuditCommand, AuditVerifyArgs,
    ClientOpts, Command, EdgeTokenArgs, EdgeTokenCommand, LogoutAllArgs, LogoutArgs, MintTokenArgs,
    RevocationsArgs, RevokeSessionArgs, SessionsArgs, WaitArgs,
};
use crate::text::escape_control;
use crate::{demo, now_ms};

/// How long the CLI waits for an answer. Admin writes answer after one commit.
const TIMEOUT: Duration = Duration::from_secs(30);

/// An authenticated client of the admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
    actor: Option<String>,
}

impl AdminClient {
    /// `url` is the control plane's base URL; `token` the admin token.
    pub fn new(url: &str, token: Option<&str>) -> anyhow::Result<Self> {
        Self::with_ca(url, token, None)
    }

    /// Like [`AdminClient::new`], trusting `ca_cert` (PEM) for https:// besides the
    /// system's roots.
    pub fn with_ca(
        url: &str,
        token: Option<&str>,
        ca_cert: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("--url {url:?} is not an http:// or https:// URL (e.g. http://127.0.0.1:8080)");
        }
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "no admin token: pass --token-file FILE, --token or set EPOCHGATE_ADMIN_TOKEN"
                )
            })?
            .to_string();
        let mut builder = reqwest::Client::builder().timeout(TIMEOUT);
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
            let ca = reqwest::Certificate::from_pem(&pem).with_context(|| {
                format!("--ca-cert {} is not a PEM certificate", path.display())
            })?;
            builder = builder.add_root_certificate(ca);
        }
        let http = builder.build().context("cannot build the HTTP client")?;
        // Who runs the command, for the audit log (informative; see ACTOR_HEADER).
        let actor = std::env::var("USER")
            .ok()
            .filter(|u| validate_id(u).is_ok());
        Ok(AdminClient {
            http,
            base,
            token,
            actor,
        })
    }

    /// Sends a request; answers the raw body of a 2xx, or an error that says what to do.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(actor) = &self.actor {
            req = req.header(ACTOR_HEADER, actor);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading the answer of {method} {url}"))?;
        if status.is_success() {
            return Ok(text);
        }
        Err(http_error(status, &text))
    }

    /// Sends and parses; returns the raw body too, for `--json`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(String, T)> {
        let raw = self.send(method, path, body).await?;
        let parsed = serde_json::from_str(&raw)
            .with_context(|| format!("the answer of {path} is not what this CLI expects"))?;
        Ok((raw, parsed))
    }

    fn transport_error(&self, err: reqwest::Error) -> anyhow::Error {
        // Classified by the errors' types, never their text: a TLS failure is a
        // `rustls::Error` somewhere down the chain, whatever its message says.
        let root = root_cause(&err);
        if let Some(tls) = tls_cause(&err) {
            anyhow!(
                "TLS with {} failed: {tls}; if it uses a private CA, pass --ca-cert (or EPOCHGATE_CA_CERT)",
                self.base
            )
        } else if err.is_connect() {
            anyhow!(
                "cannot connect to {}: is `epochgate serve` running at {}? (set --url / EPOCHGATE_URL){}",
                self.base,
                self.base,
                root.map(|r| format!(" — {r}")).unwrap_or_default()
            )
        } else if err.is_timeout() {
            anyhow!(
                "{} did not answer within {} s",
                self.base,
                TIMEOUT.as_secs()
            )
        } else {
            anyhow::Error::new(err).context(format!("request to {} failed", self.base))
        }
    }
}

/// Every error in `err`'s chain, outermost first — including the error an
/// `io::Error` wraps, which its `source()` skips.
fn chain<'e>(
    err: &'e (dyn std::error::Error + 'static),
) -> Vec<&'e (dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        out.push(e);
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    out
}

/// The innermost cause's text (what really failed: refused, reset, …).
fn root_cause(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    chain(err)
        .into_iter()
        .skip(1)
        .last()
        .map(ToString::to_string)
}

/// The TLS error in `err`'s chain, if the failure was TLS's (a certificate the CLI does
/// not trust, a handshake the server broke off).
pub fn tls_cause<'e>(
    err: &'e (dyn std::error::Error + 'static),
) -> Option<&'e tokio_rustls::rustls::Error> {
    chain(err)
        .into_iter()
        .find_map(|e| e.downcast_ref::<tokio_rustls::rustls::Error>())
}

/// An error for a non-2xx answer, with the server's `detail`.
fn http_error(status: StatusCode, body: &str) -> anyhow::Error {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let detail = field("detail").unwrap_or_else(|| body.chars().take(200).collect());
    let detail = escape_control(&detail);
    let code = field("error").unwrap_or_else(|| "error".to_string());
    let code = escape_control(&code);
    match status {
        StatusCode::UNAUTHORIZED => anyhow!(
            "the control plane refused the token: {detail} — check --token / EPOCHGATE_ADMIN_TOKEN"
        ),
        StatusCode::FORBIDDEN => anyhow!(
            "the control plane refused: {detail} — use a credential with that permission and tenant (the attempt is in the audit log)"
        ),
        StatusCode::TOO_MANY_REQUESTS => anyhow!(
            "the control plane refused: {detail} — this credential was refused too often; wait and use one with the permission"
        ),
        _ => anyhow!(
            "the control plane answered {}: {detail} ({code})",
            status.as_u16()
        ),
    }
}

/// `2026-11-28T21:37:18.123Z` for a millisecond Unix time (UTC).
pub fn format_ms(ms: u64) -> String {
    epochgate_core::decision::rfc3339_millis(ms)
}

/// A target in words: `user 42 (tenant acme)`, escaped for display.
pub fn describe(target: &Target) -> String {
    escape_control(&describe_raw(target)).into_owned()
}

fn describe_raw(target: &Target) -> String {
    match target {
        Target::Global => "every user of every tenant".to_string(),
        Target::Tenant { tenant } => format!("every user of tenant {tenant}"),
        Target::User { tenant, user } => format!("user {user} (tenant {tenant})"),
        Target::Session { tenant, sid } => format!("session {sid} (tenant {tenant})"),
        Target::ScheduledGlobal => "every user of every tenant".to_string(),
        Target::ScheduledTenant { tenant } => format!("every user of tenant {tenant}"),
    }
}

fn check_arg(flag: &str, value: &str) -> anyhow::Result<()> {
    validate_id(value).map_err(|e| anyhow!("{flag} {e}"))
}

fn reason_body(reason: Option<String>) -> Option<serde_json::Value> {
    reason.map(|r| json!({ "reason": r }))
}

fn schedule_body(reason: Option<String>, at: Option<String>) -> Option<serde_json::Value> {
    let mut body = reason_body(reason).unwrap_or_else(|| json!({}));
    if let Some(at) = at {
        body["at"] = json!(at);
    }
    (body != json!({})).then_some(body)
}

/// The path of a write, with `?wait=` when asked.
fn with_wait(path: String, wait: &WaitArgs) -> anyhow::Result<String> {
    match &wait.wait {
        None => Ok(path),
        Some(w) => {
            crate::api::admin::parse_wait(w).map_err(|e| anyhow!("--wait: {}", e.detail))?;
            Ok(format!("{path}?wait={}", percent_encode(w)))
        }
    }
}

/// Live edges and how many have applied at least `version` (`None`: this credential may
/// not list edges).
async fn edge_counts(client: &AdminClient, version: u64) -> Option<(usize, usize)> {
    let (_, answer): (String, EdgesAnswer) =
        client.call(Method::GET, "/v1/edges", None).await.ok()?;
    let live: Vec<_> = answer.edges.iter().filter(|e| e.live).collect();
    let acked = live
        .iter()
        .filter(|e| {
            e.applied_version >= version && e.stream.as_deref() == Some(answer.stream.as_str())
        })
        .count();
    Some((live.len(), acked))
}

async fn revoke(
    client: &AdminClient,
    opts: &ClientOpts,
    path: String,
    body: Option<serde_json::Value>,
    verb: &str,
    wait: &WaitArgs,
) -> anyhow::Result<()> {
    write(client, opts, Method::POST, path, body, verb, wait).await
}

/// An admin write (`POST`, or `DELETE` for a cancel), its answer printed.
async fn write(
    client: &AdminClient,
    opts: &ClientOpts,
    method: Method,
    path: String,
    body: Option<serde_json::Value>,
    verb: &str,
    wait: &WaitArgs,
) -> anyhow::Result<()> {
    let path = with_wait(path, wait)?;
    let request = client.call::<RevokeAnswer>(method, &path, body);
    // While the server waits for the edges, a progress line (on a terminal only).
    let (raw, done) = if wait.wait.is_some() && std::io::stderr().is_terminal() && !opts.json {
        let before = client
            .call::<EdgesAnswer>(Method::GET, "/v1/edges", None)
            .await
            .map(|(_, e)| e.version + 1)
            .unwrap_or(u64::MAX);
        let started = std::time::Instant::now();
        let mut request = std::pin::pin!(request);
        loop {
            tokio::select! {
                answer = &mut request => {
                    eprint!("\r\x1b[2K");
                    break answer?;
                }
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    let progress = match edge_counts(client, before).await {
                        Some((live, acked)) => format!("{acked}/{live} edges"),
                        None => "edges".to_string(),
                    };
                    eprint!(
                        "\r\x1b[2Kwaiting for {progress} … {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    } else {
        request.await?
    };
    for w in &done.warnings {
        eprintln!("epochgate: warning: {}", escape_control(w));
    }
    if opts.json {
        println!("{raw}");
        return Ok(());
    }
    match &done.propagation {
        None => println!(
            "{verb} {} at {} — version {}",
            describe(&done.target),
            format_ms(done.epoch_ms),
            done.version
        ),
        Some(p) => {
            println!(
                "{verb} {} — reached {}/{} edges in {} ms (version {})",
                describe(&done.target),
                p.acked,
                p.edges,
                p.elapsed_ms,
                done.version
            );
            if !p.lagging.is_empty() {
                eprintln!(
                    "epochgate: warning: not yet applied by {} (see `epochgate edges`)",
                    p.lagging.join(", ")
                );
            }
        }
    }
    Ok(())
}

async fn logout(client: &AdminClient, opts: &ClientOpts, a: LogoutArgs) -> anyhow::Result<()> {
    check_arg("--tenant", &a.tenant)?;
    check_arg("--user", &a.user)?;
    let path = format!(
        "/v1/tenants/{}/users/{}/logout",
        percent_encode(&a.tenant),
        percent_encode(&a.user)
    );
    revoke(
        client,
        opts,
        path,
        reason_body(a.reason),
        "logged out",
        &a.wait,
    )
    .await
}

/// Asks before a tenant-wide or global logout, naming how many edges it reaches.
async fn confirm(client: &AdminClient, what: &str) -> anyhow::Result<()> {
    let edges = match edge_counts(client, 0).await {
        Some((live, _)) => format!("{live} live edge{}", if live == 1 { "" } else { "s" }),
        None => "every edge (this credential cannot list them)".to_string(),
    };
    if !std::io::stdin().is_terminal() {
        bail!("this logs out {what} on {edges}; pass --yes to confirm (stdin is not a terminal)");
    }
    eprint!("Log out {what}? Every session ends at once on {edges}. Type yes to confirm: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the confirmation")?;
    if line.trim() != "yes" {
        bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

async fn logout_all(
    client: &AdminClient,
    opts: &ClientOpts,
    a: LogoutAllArgs,
) -> anyhow::Result<()> {
    let (path, what) = match (a.tenant, a.all_tenants) {
        (Some(tenant), false) => {
            check_arg("--tenant", &tenant)?;
            let tenant_path = format!("/v1/tenants/{}", percent_encode(&tenant));
            if a.cancel {
                let path = format!("{tenant_path}/scheduled-logout");
                return cancel(client, opts, path, a.reason, &a.wait).await;
            }
            (
                format!("{tenant_path}/logout"),
                format!("every user of tenant {tenant}"),
            )
        }
        (None, true) if a.cancel => {
            let path = "/v1/scheduled-logout".to_string();
            return cancel(client, opts, path, a.reason, &a.wait).await;
        }
        (None, true) => (
            "/v1/logout".to_string(),
            "every user of every tenant".to_string(),
        ),
        _ => bail!("give exactly one of --tenant T or --all-tenants"),
    };
    if !a.yes {
        let when =
            a.at.as_ref()
                .map(|at| format!(" at {at}"))
                .unwrap_or_default();
        confirm(client, &format!("{what}{when}")).await?;
    }
    let verb = if a.at.is_some() {
        "scheduled the logout of"
    } else {
        "logged out"
    };
    revoke(
        client,
        opts,
        path,
        schedule_body(a.reason, a.at),
        verb,
        &a.wait,
    )
    .await
}

/// `logout-all --cancel`: cancels a pending scheduled logout (no confirmation: it logs no
/// one out).
async fn cancel(
    client: &AdminClient,
    opts: &ClientOpts,
    path: String,
    reason: Option<String>,
    wait: &WaitArgs,
) -> anyhow::Result<()> {
    let verb = "cancelled the scheduled logout of";
    write(
        client,
        opts,
        Method::DELETE,
        path,
        reason_body(reason),
        verb,
        wait,
    )
    .await
}

async fn revoke_session(
    client: &AdminClient,
    opts: &ClientOpts,
    a: RevokeSessionArgs,
) -> anyhow::Result<()> {
    check_arg("--tenant", &a.tenant)?;
    check_arg("--sid", &a.sid)?;
    let path = format!(
        "/v1/tenants/{}/sessions/{}/revoke",
        percent_encode(&a.tenant),
        percent_encode(&a.sid)
    );
    revoke(
        client,
        opts,
        path,
        reason_body(a.reason),
        "revoked",
        &a.wait,
    )
    .await
}

fn ago(now: u64, then: u64) -> String {
    let s = now.saturating_sub(then) / 1000;
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

/// Lays out rows in left-aligned columns, every cell escaped for display.
fn table(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| escape_control(c).into_owned()).collect())
        .collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let width = widths.get(c).copied().unwrap_or(0);
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

async fn edges(client: &AdminClient, opts: &ClientOpts) -> anyhow::Result<()> {
    let (raw, answer): (String, EdgesAnswer) = client.call(Method::GET, "/v1/edges", None).await?;
    if opts.json {
        println!("{raw}");
        return Ok(());
    }
    println!("version {} (stream {})", answer.version, answer.stream);
    if answer.edges.is_empty() {
        println!("no edge has synced yet");
        return Ok(());
    }
    let now = now_ms();
    let mut rows = vec![vec![
        "EDGE".to_string(),
        "LIVE".to_string(),
        "APPLIED".to_string(),
        "LAG".to_string(),
        "LAST SEEN".to_string(),
        "REMOTE".to_string(),
    ]];
    for e in &answer.edges {
        rows.push(vec![
            e.id.clone(),
            if e.live { "yes" } else { "no" }.to_string(),
            e.applied_version.to_string(),
            e.lag.to_string(),
            format!(
                "{} ({})",
                format_ms(e.last_seen_ms),
                ago(now, e.last_seen_ms)
            ),
            e.remote_addr.clone().unwrap_or_else(|| "-".to_string()),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

async fn audit(client: &AdminClient, opts: &ClientOpts, a: AuditArgs) -> anyhow::Result<()> {
    let mut path = format!("/v1/audit?limit={}", a.limit);
    for (name, value) in [
        ("tenant", &a.tenant),
        ("actor", &a.actor),
        ("action", &a.action),
        ("outcome", &a.outcome),
    ] {
        if let Some(v) = value {
            path.push_str(&format!("&{name}={}", percent_encode(v)));
        }
    }
    let (raw, answer): (String, AuditAnswer) = client.call(Method::GET, &path, None).await?;
    if opts.json {
        println!("{raw}");
        return Ok(());
    }
    if answer.entries.is_empty() {
        println!("the audit log is empty");
        return Ok(());
    }
    let mut rows = vec![vec![
        "AT".to_string(),
        "VERSION".to_string(),
        "ACTOR".to_string(),
        "ACTION".to_string(),
        "OUTCOME".to_string(),
        "TARGET".to_string(),
        "FROM".to_string(),
        "REASON".to_string(),
    ]];
    for e in &answer.entries {
        rows.push(vec![
            format_ms(e.at_ms),
            e.version.to_string(),
            e.actor.clone(),
            e.action.clone(),
            e.outcome.clone(),
            describe(&e.target),
            e.source.clone().unwrap_or_else(|| "-".to_string()),
            e.reason.clone().unwrap_or_default(),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

async fn audit_verify(opts: &ClientOpts, a: AuditVerifyArgs) -> anyhow::Result<()> {
    let pg = a.db_options.pg_options()?;
    let store = crate::store::open_with(&a.db, &pg)
        .await
        .with_context(|| format!("cannot open the store {}", crate::store::redact_url(&a.db)))?;
    let chain = store
        .audit_chain()
        .await
        .context("cannot read the audit log")?;
    let mut anchors = Vec::new();
    for path in &a.anchors {
        anchors.extend(crate::audit::read_anchor(path)?);
    }
    let v = crate::audit::verify(&chain, &anchors);
    if opts.json {
        println!(
            "{}",
            serde_json::to_string(&v).context("encoding the result")?
        );
    } else if v.ok() {
        let head = v
            .head
            .as_ref()
            .map(|h| format!(", head {} ({})", h.id, h.hash))
            .unwrap_or_default();
        println!("audit chain intact: {} entries{head}", v.entries);
        if a.anchors.is_empty() {
            eprintln!(
                "epochgate: warning: no --anchor given: a deletion of the newest entries cannot be detected"
            );
        } else {
            println!(
                "every anchored head is present (up to entry {})",
                v.anchored_id
            );
        }
    } else {
        for p in &v.problems {
            eprintln!("epochgate: audit: {p}");
        }
    }
    if v.ok() {
        Ok(())
    } else {
        bail!(
            "the audit log was tampered with: {} problem(s) in {} entries",
            v.problems.len(),
            v.entries
        )
    }
}

async fn revocations(
    client: &AdminClient,
    opts: &ClientOpts,
    a: RevocationsArgs,
) -> anyhow::Result<()> {
    check_arg("--tenant", &a.tenant)?;
    let path = format!("/v1/tenants/{}/revocations", percent_encode(&a.tenant));
    let (raw, answer): (String, RevocationsAnswer) = client.call(Method::GET, &path, None).await?;
    if opts.json {
        println!("{raw}");
        return Ok(());
    }
    if answer.revocations.is_empty() {
        println!("no live revocation for tenant {}", answer.tenant);
        return Ok(());
    }
    let mut rows = vec![vec![
        "TARGET".to_string(),
        "SINCE".to_string(),
        "VERSION".to_string(),
    ]];
    for e in &answer.revocations {
        rows.push(vec![
            describe(&e.target),
            format_ms(e.epoch_ms),
            e.version.to_string(),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

async fn sessions(client: &AdminClient, opts: &ClientOpts, a: SessionsArgs) -> anyhow::Result<()> {
    check_arg("--tenant", &a.tenant)?;
    let tenant = percent_encode(&a.tenant);
    let now = now_ms();
    if let Some(user) = &a.user {
        check_arg("--user", user)?;
        let path = format!(
            "/v1/tenants/{tenant}/users/{}/sessions",
            percent_encode(user)
        );
        let (raw, answer): (String, crate::sessions::SessionsAnswer) =
            client.call(Method::GET, &path, None).await?;
        if opts.json {
            println!("{raw}");
            return Ok(());
        }
        if answer.sessions.is_empty() {
            println!(
                "no session of user {user} (tenant {}) seen recently",
                answer.tenant
            );
            return Ok(());
        }
        let mut rows = vec![[
            "SESSION",
            "DEVICE",
            "ADDRESS",
            "FIRST SEEN",
            "LAST SEEN",
            "REQUESTS",
            "EDGE",
            "STATE",
        ]
        .map(str::to_string)
        .to_vec()];
        for s in &answer.sessions {
            rows.push(vec![
                s.sid.clone().unwrap_or_else(|| {
                    format!(
                        "started {}",
                        format_ms(u64::try_from(s.session_start).unwrap_or(0) * 1000)
                    )
                }),
                s.device.clone(),
                s.address.clone().unwrap_or_else(|| "-".to_string()),
                format_ms(s.first_seen_ms),
                ago(now, s.last_seen_ms),
                s.requests.to_string(),
                s.edge.clone(),
                match s.revoked_at_ms {
                    Some(at) => format!("revoked {}", format_ms(at)),
                    None => "active".to_string(),
                },
            ]);
        }
        print!("{}", table(&rows));
        return Ok(());
    }
    let mut path = format!("/v1/tenants/{tenant}/users?limit={}", a.limit);
    if let Some(q) = &a.search {
        path.push_str(&format!("&q={}", percent_encode(q)));
    }
    let (raw, answer): (String, crate::sessions::UsersAnswer) =
        client.call(Method::GET, &path, None).await?;
    if opts.json {
        println!("{raw}");
        return Ok(());
    }
    if answer.users.is_empty() {
        println!(
            "no user of tenant {} seen with an active session",
            answer.tenant
        );
        return Ok(());
    }
    let mut rows = vec![["USER", "SESSIONS", "DEVICES", "LAST SEEN"]
        .map(str::to_string)
        .to_vec()];
    for u in &answer.users {
        rows.push(vec![
            u.user.clone(),
            u.sessions.to_string(),
            u.devices.join(", "),
            ago(now, u.last_seen_ms),
        ]);
    }
    print!("{}", table(&rows));
    if answer.truncated {
        eprintln!("epochgate: more users match; narrow with --search or raise --limit");
    }
    Ok(())
}

fn api_key_create(a: ApiKeyCreateArgs) -> anyhow::Result<()> {
    check_arg("--name", &a.name)?;
    crate::rbac::Tenants::parse(&a.tenant).map_err(|e| anyhow!("--tenant: {e}"))?;
    for s in &a.scopes {
        if crate::rbac::Scope::parse(s).is_none() {
            let known: Vec<&str> = crate::rbac::Scope::ALL.iter().map(|s| s.name()).collect();
            bail!("--scope {s:?} is not a permission ({})", known.join(", "));
        }
    }
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).map_err(|e| anyhow!("no randomness: {e}"))?;
    let key = format!(
        "eg_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let entry = json!({
        "name": a.name,
        "tenant": a.tenant,
        "scopes": a.scopes,
        "sha256": crate::rbac::key_digest_hex(&key),
    });
    println!("{key}");
    println!("{entry}");
    eprintln!("epochgate: the first line is the key (shown once); add the second to the \"api_keys\" list of the --api-keys file");
    Ok(())
}

async fn edge_token(
    client: &AdminClient,
    opts: &ClientOpts,
    a: EdgeTokenArgs,
) -> anyhow::Result<()> {
    match a.command {
        EdgeTokenCommand::Create(c) => {
            check_arg("--edge", &c.edge)?;
            let mut body = json!({ "edge": c.edge });
            if let Some(r) = c.reason {
                body["reason"] = json!(r);
            }
            let (raw, done): (String, CreatedAnswer) = client
                .call(Method::POST, "/v1/edge-tokens", Some(body))
                .await?;
            if opts.json {
                println!("{raw}");
            } else {
                println!("{}", done.token);
                eprintln!(
                    "epochgate: edge token {} for edge {:?} (shown once): give it to the edge as EPOCHGATE_EDGE_TOKEN",
                    done.id, done.edge
                );
            }
        }
        EdgeTokenCommand::List => {
            let (raw, answer): (String, ListAnswer) =
                client.call(Method::GET, "/v1/edge-tokens", None).await?;
            if opts.json {
                println!("{raw}");
                return Ok(());
            }
            if answer.edge_tokens.is_empty() {
                println!("no edge token yet (epochgate edge-token create --edge NAME)");
                return Ok(());
            }
            let mut rows = vec![["ID", "EDGE", "CREATED", "BY", "REVOKED"]
                .map(String::from)
                .to_vec()];
            for t in &answer.edge_tokens {
                rows.push(vec![
                    t.id.clone(),
                    t.edge.clone(),
                    format_ms(t.created_ms),
                    t.created_by.clone(),
                    t.revoked_ms
                        .map(format_ms)
                        .unwrap_or_else(|| "-".to_string()),
                ]);
            }
            print!("{}", table(&rows));
        }
        EdgeTokenCommand::Revoke(r) => {
            check_arg("--edge", &r.edge)?;
            let path = format!("/v1/edge-tokens/{}/revoke", percent_encode(&r.edge));
            let (raw, done): (String, RevokedAnswer) = client
                .call(Method::POST, &path, reason_body(r.reason))
                .await?;
            if opts.json {
                println!("{raw}");
            } else {
                println!(
                    "revoked {} edge token{} of edge {}",
                    done.revoked,
                    if done.revoked == 1 { "" } else { "s" },
                    done.edge
                );
            }
        }
    }
    Ok(())
}

fn mint_token(a: MintTokenArgs) -> anyhow::Result<()> {
    check_arg("--user", &a.user)?;
    check_arg("--tenant", &a.tenant)?;
    if let Some(sid) = &a.sid {
        check_arg("--sid", sid)?;
    }
    let token = demo::mint(&demo::DemoToken {
        user: a.user,
        tenant: a.tenant,
        sid: a.sid,
        iat: a.iat.unwrap_or_else(|| now_ms() / 1000),
        auth_time: a.auth_time,
        ttl_s: a.ttl,
    })
    .context("cannot encode the demo token")?;
    println!("{token}");
    Ok(())
}

/// Runs one client command (everything but `serve`).
pub async fn run(opts: ClientOpts, command: Command) -> anyhow::Result<()> {
    let token = crate::config::secret(
        "the admin token (--token)",
        opts.token.clone(),
        opts.token_file.as_deref(),
    )?;
    let client = || AdminClient::with_ca(&opts.url, token.as_deref(), opts.ca_cert.as_deref());
    match command {
        Command::Serve(_) => bail!("`serve` is not a client command"),
        Command::DemoUpstream(_) => bail!("`demo-upstream` is not a client command"),
        Command::MintToken(a) => mint_token(a),
        Command::Logout(a) => logout(&client()?, &opts, a).await,
        Command::LogoutAll(a) => logout_all(&client()?, &opts, a).await,
        Command::RevokeSession(a) => revoke_session(&client()?, &opts, a).await,
        Command::Edges => edges(&client()?, &opts).await,
        Command::Audit(AuditArgs {
            command: Some(AuditCommand::Verify(v)),
            ..
        }) => audit_verify(&opts, v).await,
        Command::Audit(a) => audit(&client()?, &opts, a).await,
        Command::Revocations(a) => revocations(&client()?, &opts, a).await,
        Command::Sessions(a) => sessions(&client()?, &opts, a).await,
        Command::ApiKey(ApiKeyArgs {
            command: ApiKeyCommand::Create(a),
        }) => api_key_create(a),
        Command::EdgeToken(a) => edge_token(&client()?, &opts, a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_milliseconds() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_ms(1_799_999_900_400), "2027-01-15T07:58:20.400Z");
        assert_eq!(format_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn describes_targets() {
        assert_eq!(
            describe(&Target::User {
                tenant: "acme".into(),
                user: "42".into()
            }),
            "user 42 (tenant acme)"
        );
        assert_eq!(describe(&Target::Global), "every user of every tenant");
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = http_error(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"unauthorized","detail":"the bearer token is not valid"}"#,
        );
        let msg = e.to_string();
        assert!(
            msg.contains("EPOCHGATE_ADMIN_TOKEN") && msg.contains("not valid"),
            "{msg}"
        );
        let e = http_error(
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_id","detail":"`user` is empty"}"#,
        );
        assert_eq!(
            e.to_string(),
            "the control plane answered 400: `user` is empty (invalid_id)"
        );
        let e = http_error(StatusCode::BAD_GATEWAY, "<html>proxy</html>");
        assert!(e.to_string().contains("<html>proxy</html>"));
    }

    #[test]
    fn client_refuses_missing_token_and_odd_urls() {
        let e = AdminClient::new("http://127.0.0.1:1", None).unwrap_err();
        assert!(e.to_string().contains("--token"));
        assert!(AdminClient::new("https://x", Some("t")).is_ok());
        assert!(AdminClient::new("ftp://x", Some("t")).is_err());
        assert!(AdminClient::new("127.0.0.1:8080", Some("t")).is_err());
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&[
            vec!["A".into(), "BB".into()],
            vec!["CCC".into(), "D".into()],
        ]);
        assert_eq!(t, "A    BB\nCCC  D\n");
    }
}
