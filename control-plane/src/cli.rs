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

    /// The admin bearer token (admin commands).
    #[arg(
        long,
        global = true,
        env = "EPOCHGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Print the server's raw JSON answer instead of a sentence.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (admin API + sync API for the edges).
    Serve(ServeArgs),
    /// End every session of one user.
    Logout(LogoutArgs),
    /// End every session of every user of one tenant, or of every tenant.
    LogoutAll(LogoutAllArgs),
    /// End one session (by its `sid` claim).
    RevokeSession(RevokeSessionArgs),
    /// List the edges that sync, with the version each has applied and its lag.
    Edges,
    /// Show the audit log, newest first.
    Audit(AuditArgs),
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
    /// Why, for the audit log (at most 1024 bytes).
    #[arg(long)]
    pub reason: Option<String>,
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
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// How many entries, newest first (1..=1000).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
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
        let cli = parse(&["logout-all", "--tenant", "acme", "--reason", "r"]).unwrap();
        match cli.command {
            Command::LogoutAll(a) => {
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
