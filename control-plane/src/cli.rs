//! The `epochgate` command line: `serve`, the admin commands that call the HTTP API, and
//! the demo token minter. Parsed here so `main.rs` stays a dispatcher and tests can parse
//! argument lists.

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::config::ServeArgs;

/// `epochgate --version`: the crate version and the git commit.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("EPOCHGATE_GIT_HASH"),
    ")"
);

/// Force logout at the edge: control plane and admin CLI.
#[derive(Debug, Parser)]
#[command(name = "epochgate", version = VERSION_LINE, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub client: ClientOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// How the admin commands reach the control plane.
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// The control plane's base URL (admin commands).
    #[arg(
        long,
        global = true,
        env = "EPOCHGATE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,

    /// The admin bearer token (admin commands). Prefer --token-file or the environment:
    /// flags show in `ps`.
    #[arg(
        long,
        global = true,
        env = "EPOCHGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// A file holding the admin bearer token (one line), instead of --token.
    #[arg(long, global = true, env = "EPOCHGATE_ADMIN_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// Print the server's raw JSON answer instead of a sentence.
    #[arg(long, global = true)]
    pub json: bool,

    /// Trust this CA certificate (PEM) for an https:// control plane, besides the
    /// system's roots.
    #[arg(long, global = true, env = "EPOCHGATE_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (admin API + sync API for the edges).
    Serve(Box<ServeArgs>),
    /// End every session of one user.
    Logout(LogoutArgs),
    /// End every session of every user of one tenant, or of every tenant.
    LogoutAll(LogoutAllArgs),
    /// End one session (by its `sid` claim).
    RevokeSession(RevokeSessionArgs),
    /// List the edges that sync, with the version each has applied and its lag.
    Edges,
    /// Show the audit log, newest first; `audit verify` checks its hash chain.
    Audit(AuditArgs),
    /// List the live revocations of one tenant (and the global one).
    Revocations(RevocationsArgs),
    /// List the users the edges see signed in to one tenant (sessions, devices, last
    /// seen), or with --user that user's sessions.
    Sessions(SessionsArgs),
    /// Make an API key for automation: prints the key once and its `--api-keys` entry.
    ApiKey(ApiKeyArgs),
    /// Per-edge credentials: create (the token is printed once), list, revoke.
    EdgeToken(EdgeTokenArgs),
    /// DEV/DEMO ONLY: print a JWT signed with the public built-in demo key (kid `demo`).
    MintToken(MintTokenArgs),
    /// DEV/DEMO ONLY: run the demo upstream app (echoes the identity Envoy passes on).
    DemoUpstream(DemoUpstreamArgs),
}

#[derive(Debug, Args)]
pub struct DemoUpstreamArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: std::net::SocketAddr,
}

/// `--wait` for every live edge to apply the change (`5s`, `500ms`, `2.5`; at most 60 s).
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Answer once every live edge applied the change, or after this long (`5s`, `500ms`).
    #[arg(long)]
    pub wait: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    #[arg(long)]
    pub tenant: String,
    /// The user id exactly as the IdP issues it (`sub`), e.g. `auth0|5f7c8ec7`.
    #[arg(long)]
    pub user: String,
    /// Why, for the audit log (at most 1024 bytes).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["tenant", "all_tenants"])))]
pub struct LogoutAllArgs {
    /// Log out every user of this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Log out every user of every tenant.
    #[arg(long)]
    pub all_tenants: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Log out at this future time (RFC 3339, e.g. 2026-11-29T02:00:00Z) instead of now;
    /// until then the edges announce it in an `epochgate-logout-at` response header.
    #[arg(long)]
    pub at: Option<String>,
    /// Cancel the pending scheduled logout instead (audited). One whose time has passed
    /// took effect and cannot be cancelled (the server answers 409 `schedule_passed`).
    #[arg(long, conflicts_with = "at")]
    pub cancel: bool,
    /// Why, for the audit log (at most 1024 bytes).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct RevokeSessionArgs {
    #[arg(long)]
    pub tenant: String,
    /// The session id (`sid` claim).
    #[arg(long)]
    pub sid: String,
    /// Why, for the audit log (at most 1024 bytes).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// How many entries, newest first (1..=1000).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Only this tenant's entries.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this actor's (`admin`, `key:NAME`, `jwt:SUB`, with ` (operator)` if named).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this action (`logout_user`, `logout_tenant`, `revoke_session`,
    /// `logout_all_tenants`, `read_audit`, …).
    #[arg(long)]
    pub action: Option<String>,
    /// Only `ok` or only `denied` entries.
    #[arg(long)]
    pub outcome: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit chain in the database itself (not through the server): every entry's
    /// hash, no entry missing, and every head in the anchor file(s) still present.
    Verify(AuditVerifyArgs),
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// The store (`sqlite://PATH`, a path, or `postgres://…`).
    #[arg(long, env = "EPOCHGATE_DB")]
    pub db: String,
    #[command(flatten)]
    pub db_options: crate::config::DbArgs,
    /// An anchor file written by `serve --audit-anchor` (repeat for each replica's).
    #[arg(long = "anchor", env = "EPOCHGATE_AUDIT_ANCHOR")]
    pub anchors: Vec<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct RevocationsArgs {
    #[arg(long)]
    pub tenant: String,
}

#[derive(Debug, Args)]
pub struct SessionsArgs {
    #[arg(long)]
    pub tenant: String,
    /// One user's sessions (device, address, first/last seen, edge, revoked).
    #[arg(long)]
    pub user: Option<String>,
    /// Only users whose id contains this (case-insensitive; the users list).
    #[arg(long, conflicts_with = "user")]
    pub search: Option<String>,
    /// At most this many users (1..=1000).
    #[arg(long, default_value_t = 100, conflicts_with = "user")]
    pub limit: u32,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ApiKeyArgs {
    #[command(subcommand)]
    pub command: ApiKeyCommand,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Generate a key: the key goes to stdout's first line, the entry for the `--api-keys`
    /// file (holding only its SHA-256) to the second.
    Create(ApiKeyCreateArgs),
}

#[derive(Debug, Args)]
pub struct ApiKeyCreateArgs {
    /// The key's name in the audit log (`key:NAME`).
    #[arg(long)]
    pub name: String,
    /// The tenant it may act on, or `*` for every tenant.
    #[arg(long)]
    pub tenant: String,
    /// A permission (repeat): sessions:revoke, sessions:revoke_all, audit:read,
    /// edges:read, revocations:read, edges:manage, sessions:read.
    #[arg(long = "scope", required = true)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct EdgeTokenArgs {
    #[command(subcommand)]
    pub command: EdgeTokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum EdgeTokenCommand {
    /// A new token for one edge (an Envoy fleet, a Worker deployment): stdout gets the
    /// token, once; the store keeps only its SHA-256. Give it to the edge as
    /// `EPOCHGATE_EDGE_TOKEN`.
    Create(EdgeTokenCreateArgs),
    /// Every edge token: id, edge, created, by whom, revoked.
    List,
    /// End every token of one edge: it stops syncing at once.
    Revoke(EdgeTokenRevokeArgs),
}

#[derive(Debug, Args)]
pub struct EdgeTokenCreateArgs {
    /// The edge's name, as `epochgate edges` and the metrics will show it.
    #[arg(long)]
    pub edge: String,
    /// Why, for the audit log (at most 1024 bytes).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct EdgeTokenRevokeArgs {
    #[arg(long)]
    pub edge: String,
    /// Why, for the audit log (at most 1024 bytes).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct MintTokenArgs {
    /// `sub`.
    #[arg(long)]
    pub user: String,
    /// `tid`.
    #[arg(long)]
    pub tenant: String,
    /// `sid`, if the token belongs to a session.
    #[arg(long)]
    pub sid: Option<String>,
    /// Lifetime in seconds (`exp = iat + ttl`).
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// `iat` in Unix seconds (default: now).
    #[arg(long)]
    pub iat: Option<u64>,
    /// `auth_time` in Unix seconds (default: absent).
    #[arg(long)]
    pub auth_time: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("epochgate").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn logout_all_needs_exactly_one_scope() {
        assert!(parse(&["logout-all"]).is_err());
        assert!(parse(&["logout-all", "--tenant", "a", "--all-tenants"]).is_err());
        assert!(parse(&["logout-all", "--all-tenants"]).is_ok());
        assert!(parse(&["logout-all", "--tenant", "a", "--cancel", "--at", "x"]).is_err());
        let cli = parse(&["logout-all", "--tenant", "acme", "--reason", "r"]).unwrap();
        match cli.command {
            Command::LogoutAll(a) => {
                assert!(!a.yes);
                assert_eq!(a.tenant.as_deref(), Some("acme"));
                assert!(!a.all_tenants);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let cli = parse(&["--url", "http://x:1", "edges", "--json"]).unwrap();
        assert_eq!(cli.client.url, "http://x:1");
        assert!(cli.client.json);
        let cli = parse(&["logout", "--tenant", "t", "--user", "u", "--token", "tok"]).unwrap();
        assert_eq!(cli.client.token.as_deref(), Some("tok"));
    }
}
