//! The console's HTML, as maud templates compiled into the binary. Every value is
//! HTML-escaped by maud; caller-supplied text (ids, reasons, actors, devices) also goes
//! through [`crate::text::escape_control`] first ([`t`]), so control and bidi characters show
//! as escapes. No inline script or style: the CSP forbids them.

use epochgate_core::ids::percent_encode;
use epochgate_core::state::Target;
use maud::{html, Markup, DOCTYPE};

use super::session::Flash;
use crate::api::{EdgesAnswer, Propagation};
use crate::audit::Verification;
use crate::sessions::{SessionsAnswer, UsersAnswer};
use crate::store::{AuditEntry, Entry};
use crate::text::escape_control;

/// Caller-supplied text, made visible (then escaped by maud).
pub fn t(text: &str) -> String {
    escape_control(text).into_owned()
}

/// What every signed-in page shows around its content.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub actor: String,
    /// `tenant acme`, or `every tenant`.
    pub scope: String,
    pub csrf: String,
    pub can_audit: bool,
    pub can_edges: bool,
    pub now_ms: u64,
    /// The previous action's outcome, shown once.
    pub flash: Option<Flash>,
}

/// Which page is current in the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Users,
    Audit,
    Edges,
    None,
}

/// `/console/tenants/{tenant}`.
pub fn tenant_base(tenant: &str) -> String {
    format!("/console/tenants/{}", percent_encode(tenant))
}

pub fn users_url(tenant: &str) -> String {
    format!("{}/users", tenant_base(tenant))
}

pub fn user_url(tenant: &str, user: &str) -> String {
    format!("{}/users/{}", tenant_base(tenant), percent_encode(user))
}

/// A time: `2026-12-02 18:53:06 UTC`, and how long ago (or ahead).
pub fn when(now_ms: u64, ms: u64) -> Markup {
    let iso = epochgate_core::decision::rfc3339(ms);
    let shown = iso.replacen('T', " ", 1).replacen('Z', " UTC", 1);
    html! { time datetime=(iso) title=(shown) { (shown) } " " span.ago { "(" (relative(now_ms, ms)) ")" } }
}

/// `1 user`, `2 users`.
pub fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `12 s ago`, `3 min ago`, `in 2 h`.
pub fn relative(now_ms: u64, ms: u64) -> String {
    let (d, ahead) = if ms > now_ms {
        (ms - now_ms, true)
    } else {
        (now_ms - ms, false)
    };
    let s = d / 1000;
    let amount = match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    };
    if ahead {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// The receipt of a write that waited for the edges: `reached 3/3 edges in 12 ms`, or
/// which lag.
pub fn receipt(p: &Propagation) -> String {
    if p.edges == 0 {
        return "no live edge to reach (none polled within the live window)".into();
    }
    let mut s = format!(
        "reached {}/{} edges in {} ms",
        p.acked, p.edges, p.elapsed_ms
    );
    if !p.lagging.is_empty() {
        let names: Vec<String> = p.lagging.iter().map(|e| t(e)).collect();
        s.push_str(&format!("; not yet applied by {}", names.join(", ")));
    }
    s
}

/// A target in words (ids made visible).
pub fn describe(target: &Target) -> String {
    match target {
        Target::Global | Target::ScheduledGlobal => "every user of every tenant".into(),
        Target::Tenant { tenant } | Target::ScheduledTenant { tenant } => {
            format!("every user of tenant {}", t(tenant))
        }
        Target::User { tenant, user } => format!("user {} (tenant {})", t(user), t(tenant)),
        Target::Session { tenant, sid } => format!("session {} (tenant {})", t(sid), t(tenant)),
    }
}

/// The whole page.
pub fn page(title: &str, chrome: Option<(&Chrome, Nav)>, body: Markup) -> Markup {
    let flash = chrome.and_then(|(c, _)| c.flash.as_ref());
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · Epochgate console" }
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/" { "Epochgate" }
                    @if let Some((c, nav)) = chrome {
                        nav aria-label="Main" {
                            a href="/console/users" aria-current=[(nav == Nav::Users).then_some("page")] { "Users" }
                            @if c.can_audit {
                                a href="/console/audit" aria-current=[(nav == Nav::Audit).then_some("page")] { "Audit" }
                            }
                            @if c.can_edges {
                                a href="/console/edges" aria-current=[(nav == Nav::Edges).then_some("page")] { "Edges" }
                            }
                        }
                        div.who {
                            span.actor { (t(&c.actor)) }
                            span.scope { (c.scope) }
                            form method="post" action="/console/logout" {
                                input type="hidden" name="csrf" value=(c.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    @if let Some(f) = flash {
                        div.flash.ok[f.ok].error[!f.ok] role="status" aria-live="polite" data-flash {
                            p { (f.text) }
                            @if let Some(r) = &f.receipt {
                                p.receipt data-receipt { (r) }
                            }
                        }
                    }
                    (body)
                }
            }
        }
    }
}

/// The hidden fields of a state-changing form.
fn hidden(csrf: &str, return_to: &str) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(csrf);
        input type="hidden" name="return_to" value=(return_to);
    }
}

/// The sign-in page.
pub fn login(login_csrf: &str, error: Option<&str>, idp: bool) -> Markup {
    let body = html! {
        section.card.narrow {
            h1 { "Sign in" }
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            form method="post" action="/console/login" {
                input type="hidden" name="login_csrf" value=(login_csrf);
                label for="credential" { "Admin credential" }
                input #credential type="password" name="credential" autocomplete="current-password" required autofocus;
                p.hint { "An API key, the admin token, or an admin JWT. It stays on the server: the browser keeps only a session cookie." }
                button.primary type="submit" { "Sign in" }
            }
            @if idp {
                p.or { "or" }
                a.button href="/console/login/oidc" { "Sign in with your IdP" }
            }
        }
    };
    page("Sign in", None, body)
}

/// After the IdP's sign-in: on to the console (a same-site navigation).
pub fn signed_in() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="0;url=/console/";
                title { "Signed in · Epochgate console" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body { main { p { "Signed in. " a href="/console/" { "Continue to the console" } } } }
        }
    }
}

/// An error page (403, 404, 400…).
pub fn error_page(chrome: Option<&Chrome>, status: u16, detail: &str) -> Markup {
    let title = match status {
        403 => "Not allowed",
        404 => "Not found",
        401 => "Sign in again",
        400 => "Cannot do that",
        _ => "Something went wrong",
    };
    let body = html! {
        section.card {
            h1 { (title) }
            p data-error=(status) { (detail) }
            p { a href="/console/" { "Back to the console" } }
        }
    };
    page(title, chrome.map(|c| (c, Nav::None)), body)
}

/// The tenant picker of a global admin.
fn tenant_picker(current: Option<&str>, known: &[String]) -> Markup {
    html! {
        form.picker method="get" action="/console/users" {
            label for="tenant" { "Tenant" }
            input #tenant name="tenant" list="tenants" value=[current] required autocomplete="off";
            datalist #tenants {
                @for k in known { option value=(k) {} }
            }
            button type="submit" { "Show" }
        }
    }
}

/// What the Users page needs besides the answer.
pub struct UsersPage<'a> {
    pub chrome: &'a Chrome,
    pub tenant: &'a str,
    pub query: Option<&'a str>,
    pub answer: &'a UsersAnswer,
    /// The tenant picker's list (global admins only).
    pub picker: Option<&'a [String]>,
    pub can_logout: bool,
    pub logout_all: Option<LogoutAll<'a>>,
    pub idle_min: u64,
}

/// The Logout All dialog: what it reaches, and the pending schedules.
pub struct LogoutAll<'a> {
    pub users: u64,
    pub sessions: u64,
    pub live_edges: u64,
    pub schedules: &'a [Entry],
}

pub fn users(p: &UsersPage<'_>) -> Markup {
    let c = p.chrome;
    let here = match p.query {
        Some(q) => format!("{}?q={}", users_url(p.tenant), percent_encode(q)),
        None => users_url(p.tenant),
    };
    let body = html! {
        div.head {
            h1 { "Users " small { "tenant " b data-tenant { (t(p.tenant)) } } }
            @if let Some(_) = &p.logout_all {
                a.button.danger href=(format!("{}/logout-all", tenant_base(p.tenant))) data-dialog="logout-all" { "Logout All Users" }
            }
        }
        div.tools {
            @if let Some(known) = p.picker { (tenant_picker(Some(p.tenant), known)) }
            form.search method="get" action=(users_url(p.tenant)) role="search" {
                label for="q" { "Search users" }
                input #q type="search" name="q" value=[p.query] placeholder="user id contains…";
                button type="submit" { "Search" }
            }
        }
        @if let Some(la) = &p.logout_all {
            (schedules(c, p.tenant, la.schedules, &here))
        }
        @if p.answer.users.is_empty() {
            p.empty {
                "No user of this tenant has an active session seen by the edges in the last "
                (p.idle_min) " minutes" @if p.query.is_some() { " matching the search" } "."
            }
        } @else {
            table.data.users {
                caption { (count(p.answer.users.len() as u64, "user")) ", " (count(p.answer.sessions, "active session"))
                    @if p.answer.truncated { " (more match: narrow the search)" } }
                thead { tr { th scope="col" { "User" } th scope="col" { "Sessions" } th scope="col" { "Devices" } th scope="col" { "Last seen" }
                    @if p.can_logout { th scope="col" { span.sr-only { "Actions" } } } } }
                tbody {
                    @for u in &p.answer.users {
                        tr data-user=(u.user) {
                            td data-label="User" { a href=(user_url(p.tenant, &u.user)) { (t(&u.user)) } }
                            td data-label="Sessions" { (u.sessions) }
                            td data-label="Devices" {
                                ul.devices { @for d in &u.devices { li { (t(d)) } } }
                            }
                            td data-label="Last seen" { (when(c.now_ms, u.last_seen_ms)) }
                            @if p.can_logout {
                                td.actions {
                                    form method="post" action=(format!("{}/logout", user_url(p.tenant, &u.user))) {
                                        (hidden(&c.csrf, &here))
                                        button.danger type="submit" aria-label=(format!("Logout {}", t(&u.user))) { "Logout" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(la) = &p.logout_all {
            dialog #logout-all aria-labelledby="logout-all-title" {
                (logout_all_form(c, p.tenant, la, p.idle_min, &here))
            }
        }
    };
    page("Users", Some((c, Nav::Users)), body)
}

/// The pending schedules of a tenant (its own and the global ones), each with Cancel.
fn schedules(c: &Chrome, tenant: &str, entries: &[Entry], here: &str) -> Markup {
    html! {
        @if !entries.is_empty() {
            section.schedules aria-labelledby="schedules-title" {
                h2 #schedules-title { "Scheduled logouts" }
                ul {
                    @for e in entries {
                        li data-schedule {
                            "Logout of " (describe(&e.target)) " at " (when(c.now_ms, e.epoch_ms))
                            @if matches!(e.target, Target::ScheduledTenant { .. }) {
                                form.inline method="post" action=(format!("{}/schedule/cancel", tenant_base(tenant))) {
                                    (hidden(&c.csrf, here))
                                    button type="submit" { "Cancel" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The Logout All form (in the dialog, and as its own page without JavaScript).
pub fn logout_all_form(
    c: &Chrome,
    tenant: &str,
    la: &LogoutAll<'_>,
    idle_min: u64,
    return_to: &str,
) -> Markup {
    html! {
        form.logout-all method="post" action=(format!("{}/logout", tenant_base(tenant))) data-confirm-value=(tenant) {
            (hidden(&c.csrf, return_to))
            h2 #logout-all-title { "Logout All Users" }
            p.reach data-reach {
                "This ends every session of every user of tenant " b { (t(tenant)) } ": "
                b data-users { (count(la.users, "user")) } " with " b data-sessions { (count(la.sessions, "active session")) }
                " (seen in the last " (idle_min) " minutes), on " b data-edges { (count(la.live_edges, "live edge")) } ". "
                "They can sign in again: no account is blocked."
            }
            label for="reason" { "Reason " span.hint { "(kept in the audit log)" } }
            textarea #reason name="reason" required maxlength="1024" rows="2" {}
            fieldset.when {
                legend { "When" }
                label.radio { input type="radio" name="when" value="now" checked; " Now" }
                label.radio { input type="radio" name="when" value="at"; " At a scheduled time" }
                label for="at" { "Time (UTC)" }
                input #at type="datetime-local" name="at" step="60";
                p.hint {
                    "Until then every response to this tenant's users carries the header "
                    code { "epochgate-logout-at: <time>" } ", so the portal and the mobile app can warn users "
                    "and let them save their work. Pick a quiet window and tell your team first."
                }
            }
            label for="confirm" { "Type the tenant name " b { (t(tenant)) } " to confirm" }
            input #confirm name="confirm" autocomplete="off" required spellcheck="false";
            div.buttons {
                button type="button" data-close { "Close" }
                button.danger type="submit" data-confirm-submit { "Logout All Users" }
            }
        }
    }
}

/// The Logout All page (no JavaScript).
pub fn logout_all_page(c: &Chrome, tenant: &str, la: &LogoutAll<'_>, idle_min: u64) -> Markup {
    let body = html! {
        section.card { (logout_all_form(c, tenant, la, idle_min, &users_url(tenant))) }
        (schedules(c, tenant, la.schedules, &format!("{}/logout-all", tenant_base(tenant))))
    };
    page("Logout All Users", Some((c, Nav::Users)), body)
}

/// One user's sessions.
pub fn user(c: &Chrome, answer: &SessionsAnswer, can_logout: bool, idle_min: u64) -> Markup {
    let here = user_url(&answer.tenant, &answer.user);
    let body = html! {
        p.crumbs { a href=(users_url(&answer.tenant)) { "← Users of " (t(&answer.tenant)) } }
        div.head {
            h1 { (t(&answer.user)) " " small { "tenant " (t(&answer.tenant)) } }
            @if can_logout {
                form method="post" action=(format!("{here}/logout")) {
                    (hidden(&c.csrf, &here))
                    button.danger type="submit" { "Logout" }
                }
            }
        }
        @if answer.sessions.is_empty() {
            p.empty { "No session of this user was seen by the edges in the last " (idle_min) " minutes." }
        } @else {
            table.data.sessions {
                caption { (count(answer.sessions.len() as u64, "session")) " seen" }
                thead { tr {
                    th scope="col" { "Session" } th scope="col" { "Device" } th scope="col" { "Address" }
                    th scope="col" { "First seen" } th scope="col" { "Last seen" } th scope="col" { "Requests" }
                    th scope="col" { "Edge" } th scope="col" { "State" }
                    @if can_logout { th scope="col" { span.sr-only { "Actions" } } }
                } }
                tbody {
                    @for s in &answer.sessions {
                        tr data-sid=[s.sid.as_deref()] data-revoked=(s.revoked) {
                            td data-label="Session" {
                                @match &s.sid {
                                    Some(sid) => code { (t(sid)) },
                                    None => span.hint { "no sid; started " (when(c.now_ms, u64::try_from(s.session_start).unwrap_or(0).saturating_mul(1000))) },
                                }
                            }
                            td data-label="Device" { (t(&s.device)) }
                            td data-label="Address" { (s.address.as_deref().map(t).unwrap_or_else(|| "–".into())) }
                            td data-label="First seen" { (when(c.now_ms, s.first_seen_ms)) }
                            td data-label="Last seen" { (when(c.now_ms, s.last_seen_ms)) }
                            td data-label="Requests" { (s.requests) }
                            td data-label="Edge" { (t(&s.edge)) }
                            td data-label="State" {
                                @match s.revoked_at_ms {
                                    Some(at) => span.badge.revoked { "ended " (relative(c.now_ms, at)) },
                                    None => span.badge.active { "active" },
                                }
                            }
                            @if can_logout {
                                td.actions {
                                    @if let (Some(sid), false) = (&s.sid, s.revoked) {
                                        form method="post" action=(format!("{}/sessions/{}/revoke", tenant_base(&answer.tenant), percent_encode(sid))) {
                                            (hidden(&c.csrf, &here))
                                            button.danger type="submit" { "End session" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p.hint { "A session without a session id (" code { "sid" } ") can only be ended with the user's Logout." }
        }
    };
    page(&t(&answer.user), Some((c, Nav::Users)), body)
}

/// The audit filters as the form shows them.
#[derive(Debug, Default)]
pub struct AuditFilters {
    pub tenant: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
}

/// The actions an audit entry can name (for the filter).
const ACTIONS: [&str; 10] = [
    "logout_user",
    "revoke_session",
    "logout_tenant",
    "logout_all_tenants",
    "schedule_logout_tenant",
    "schedule_logout_all_tenants",
    "read_sessions",
    "read_audit",
    "read_edges",
    "read_revocations",
];

pub fn audit(
    c: &Chrome,
    filters: &AuditFilters,
    entries: &[AuditEntry],
    chain: Option<&Verification>,
    global: bool,
) -> Markup {
    let body = html! {
        h1 { "Audit" }
        @match chain {
            Some(v) if v.ok() => div.chain.ok data-chain="ok" {
                "Hash chain intact: " (v.entries) " entries"
                @if let Some(h) = &v.head { ", head " (h.id) " (" code { (h.hash.get(..12).unwrap_or(&h.hash)) "…" } ")" }
                @if v.anchored_id > 0 { "; every anchored head present (up to entry " (v.anchored_id) ")" }
                @else { "; no --audit-anchor is configured, so a deletion of the newest entries would not show" }
            },
            Some(v) => div.chain.error data-chain="broken" role="alert" {
                p { "The audit log was tampered with: " (v.problems.len()) " problems." }
                ul { @for p in v.problems.iter().take(20) { li { (p) } } }
            },
            None => div.chain data-chain="n/a" { "The hash chain covers every tenant; a global admin can verify it here." },
        }
        form.filters method="get" action="/console/audit" {
            @if global {
                label { "Tenant " input name="tenant" value=[filters.tenant.as_deref()]; }
            }
            label { "Actor " input name="actor" value=[filters.actor.as_deref()]; }
            label { "Action "
                select name="action" {
                    option value="" { "any" }
                    @for a in ACTIONS { option value=(a) selected[filters.action.as_deref() == Some(a)] { (a) } }
                }
            }
            label { "Outcome "
                select name="outcome" {
                    option value="" { "any" }
                    @for o in ["ok", "denied"] { option value=(o) selected[filters.outcome.as_deref() == Some(o)] { (o) } }
                }
            }
            button type="submit" { "Filter" }
        }
        @if entries.is_empty() {
            p.empty { "No audit entry matches." }
        } @else {
            table.data.audit {
                caption { "Newest first, at most 200" }
                thead { tr {
                    th scope="col" { "At" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Outcome" }
                    th scope="col" { "Target" } th scope="col" { "Reason" } th scope="col" { "From" } th scope="col" { "Version" }
                } }
                tbody {
                    @for e in entries {
                        tr data-action=(e.action) data-outcome=(e.outcome) {
                            td data-label="At" { (when(c.now_ms, e.at_ms)) }
                            td data-label="Actor" { (t(&e.actor)) }
                            td data-label="Action" { code { (e.action) } }
                            td data-label="Outcome" { span.badge.ok[e.outcome == "ok"].revoked[e.outcome != "ok"] { (e.outcome) } }
                            td data-label="Target" { (describe(&e.target)) }
                            td data-label="Reason" { (e.reason.as_deref().map(t).unwrap_or_default()) }
                            td data-label="From" { (e.source.as_deref().map(t).unwrap_or_else(|| "–".into())) }
                            td data-label="Version" { (e.version) }
                        }
                    }
                }
            }
        }
    };
    page("Audit", Some((c, Nav::Audit)), body)
}

pub fn edges(c: &Chrome, answer: &EdgesAnswer) -> Markup {
    let live = answer.edges.iter().filter(|e| e.live).count();
    let body = html! {
        h1 { "Edges" }
        p.summary data-refresh="5" {
            "Version " b { (answer.version) } " · " (live) " live of " (answer.edges.len()) " · refreshes every 5 s"
        }
        @if answer.edges.is_empty() {
            p.empty { "No edge has synced yet." }
        } @else {
            table.data.edges {
                thead { tr {
                    th scope="col" { "Edge" } th scope="col" { "Live" } th scope="col" { "Applied version" }
                    th scope="col" { "Lag" } th scope="col" { "Last seen" } th scope="col" { "Remote" }
                } }
                tbody {
                    @for e in &answer.edges {
                        tr data-edge=(e.id) data-live=(e.live) {
                            td data-label="Edge" { code { (t(&e.id)) } }
                            td data-label="Live" { span.badge.active[e.live].revoked[!e.live] { @if e.live { "live" } @else { "gone" } } }
                            td data-label="Applied version" { (e.applied_version) }
                            td data-label="Lag" { @if e.lag == 0 { "none" } @else { (e.lag) " versions" } }
                            td data-label="Last seen" { (when(c.now_ms, e.last_seen_ms)) }
                            td data-label="Remote" { (e.remote_addr.as_deref().map(t).unwrap_or_else(|| "–".into())) }
                        }
                    }
                }
            }
        }
    };
    page("Edges", Some((c, Nav::Edges)), body)
}

/// The page a global admin sees before picking a tenant.
pub fn pick_tenant(c: &Chrome, known: &[String]) -> Markup {
    let body = html! {
        h1 { "Users" }
        p { "Pick a tenant to see its users." }
        (tenant_picker(None, known))
        @if !known.is_empty() {
            ul.tenants { @for k in known { li { a href=(users_url(k)) { (t(k)) } } } }
        }
    };
    page("Users", Some((c, Nav::Users)), body)
}
