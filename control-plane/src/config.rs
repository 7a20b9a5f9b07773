//! `epochgate serve` configuration, in two phases: [`ServeArgs`] as clap parses it (flags
//! and environment), compiled by `TryFrom` into a validated [`ServeConfig`] with typed
//! errors, so a bad setting stops the process at start and never shows up on a request.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::auth::{Credentials, TokenError};

/// The longest a sync long-poll is held, whatever the edge asks.
pub const MAX_WAIT_S: u64 = 60;

/// Flags of `epochgate serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the chosen address is printed
    /// to stdout as `listening on http://ADDR`).
    #[arg(long, env = "EPOCHGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The store: `sqlite://PATH` or a plain file path (created if missing).
    #[arg(long, env = "EPOCHGATE_DB", default_value = "epochgate.db")]
    pub db: String,

    /// Bearer token for the admin API (at least 16 characters).
    #[arg(long, env = "EPOCHGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,

    /// Bearer token the edges use for `GET /v1/sync` (at least 16 characters, not the
    /// admin token).
    #[arg(long, env = "EPOCHGATE_EDGE_TOKEN", hide_env_values = true)]
    pub edge_token: String,

    /// The longest a login can keep producing valid tokens (the IdP's absolute
    /// refresh-token / session lifetime), in seconds. Entries older than this are
    /// compacted away.
    #[arg(long, env = "EPOCHGATE_MAX_SESSION_LIFETIME", default_value_t = 86_400)]
    pub max_session_lifetime: u64,

    /// Seconds between compaction runs.
    #[arg(long, env = "EPOCHGATE_COMPACT_INTERVAL", default_value_t = 60)]
    pub compact_interval: u64,
}

/// A validated `serve` configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub db: String,
    pub server: ServerConfig,
}

/// What the running server needs (the part of [`ServeConfig`] handlers and background
/// tasks read).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub credentials: Credentials,
    pub max_session_lifetime_s: u64,
    pub compact_interval: Duration,
}

/// Why a `serve` configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("--max-session-lifetime must be at least 1 second")]
    ZeroLifetime,
    #[error("--compact-interval must be at least 1 second")]
    ZeroCompactInterval,
    #[error("--db must not be empty")]
    EmptyDb,
}

impl TryFrom<ServeArgs> for ServeConfig {
    type Error = ConfigError;

    fn try_from(args: ServeArgs) -> Result<Self, Self::Error> {
        if args.db.trim().is_empty() {
            return Err(ConfigError::EmptyDb);
        }
        Ok(ServeConfig {
            listen: args.listen,
            db: args.db,
            server: ServerConfig::new(
                &args.admin_token,
                &args.edge_token,
                args.max_session_lifetime,
                args.compact_interval,
            )?,
        })
    }
}

impl ServerConfig {
    /// Validates the server settings (also used by tests, which skip the flags).
    pub fn new(
        admin_token: &str,
        edge_token: &str,
        max_session_lifetime_s: u64,
        compact_interval_s: u64,
    ) -> Result<Self, ConfigError> {
        if max_session_lifetime_s == 0 {
            return Err(ConfigError::ZeroLifetime);
        }
        if compact_interval_s == 0 {
            return Err(ConfigError::ZeroCompactInterval);
        }
        Ok(ServerConfig {
            credentials: Credentials::new(admin_token, edge_token)?,
            max_session_lifetime_s,
            compact_interval: Duration::from_secs(compact_interval_s),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            db: "x.db".into(),
            admin_token: "a".repeat(16),
            edge_token: "e".repeat(16),
            max_session_lifetime: 3600,
            compact_interval: 60,
        }
    }

    #[test]
    fn valid_args_compile() {
        let cfg = ServeConfig::try_from(args()).unwrap();
        assert_eq!(cfg.server.max_session_lifetime_s, 3600);
        assert_eq!(cfg.server.compact_interval, Duration::from_secs(60));
    }

    #[test]
    fn bad_args_are_refused_with_their_reason() {
        let mut a = args();
        a.admin_token = "short".into();
        assert!(matches!(
            ServeConfig::try_from(a),
            Err(ConfigError::Token(TokenError::TooShort { .. }))
        ));
        let mut a = args();
        a.max_session_lifetime = 0;
        assert_eq!(
            ServeConfig::try_from(a).unwrap_err(),
            ConfigError::ZeroLifetime
        );
        let mut a = args();
        a.compact_interval = 0;
        assert_eq!(
            ServeConfig::try_from(a).unwrap_err(),
            ConfigError::ZeroCompactInterval
        );
        let mut a = args();
        a.db = " ".into();
        assert_eq!(ServeConfig::try_from(a).unwrap_err(), ConfigError::EmptyDb);
    }
}
