//! `epochgate serve` configuration, in two phases: [`ServeArgs`] as clap parses it (flags
//! and environment), compiled by `TryFrom` into a validated [`ServeConfig`] with typed
//! errors, so a bad setting stops the process at start and never shows up on a request.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use std::path::PathBuf;

use crate::rbac::{parse_api_keys, AdminJwt, Credentials, CredentialsError};

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

    /// Bootstrap bearer token for the admin API (at least 16 characters): a global
    /// admin with every permission. Optional when --api-keys or --admin-jwt-config is set.
    #[arg(long, env = "EPOCHGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// A JSON file of API keys for automation, stored hashed:
    /// `{"api_keys": [{"name", "tenant" ("*" = every tenant), "scopes": [...], "sha256"}]}`
    /// (`epochgate api-key create` prints an entry).
    #[arg(long, env = "EPOCHGATE_API_KEYS")]
    pub api_keys: Option<PathBuf>,

    /// A JSON file configuring admin JWTs, in the filter's format (`keys`, `issuer`,
    /// `audiences` (required), `claims`); the tenant claim (`tid`) holds the tenant or
    /// `*`, and `permissions` (list) or `scope` (space-separated) the permissions.
    #[arg(long, env = "EPOCHGATE_ADMIN_JWT_CONFIG")]
    pub admin_jwt_config: Option<PathBuf>,

    /// Append-only file that receives the audit chain's head after every audit entry
    /// (`{"id","hash"}` per line). Keep it where whoever can write the database cannot
    /// (another volume or user, `chattr +a`); `epochgate audit verify --anchor` checks the
    /// chain against it, so deleting the newest entries is detected.
    #[arg(long, env = "EPOCHGATE_AUDIT_ANCHOR")]
    pub audit_anchor: Option<PathBuf>,

    /// An edge is live (counted by `?wait=` receipts) if it polled within this many
    /// seconds. Keep it above the edges' long-poll `wait_s`.
    #[arg(long, env = "EPOCHGATE_EDGE_LIVE_WINDOW", default_value_t = 90)]
    pub edge_live_window: u64,

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

    /// A session the edges have not seen for this many seconds is no longer listed
    /// (the users list, the console) and is deleted at the next compaction run.
    #[arg(long, env = "EPOCHGATE_SESSION_IDLE", default_value_t = 1800)]
    pub session_idle: u64,

    /// A console sign-in ends after this many seconds without a request (and after 12 h
    /// in any case).
    #[arg(long, env = "EPOCHGATE_CONSOLE_IDLE", default_value_t = 900)]
    pub console_idle: u64,

    /// A JSON file enabling the console's "Sign in with your IdP" (authorization code +
    /// PKCE): `{"issuer", "client_id", "client_secret"?, "redirect_uri", "scopes"?,
    /// "extra_params"?}`. The IdP's access token must be an admin JWT
    /// (`--admin-jwt-config`).
    #[arg(long, env = "EPOCHGATE_CONSOLE_OIDC", requires = "admin_jwt_config")]
    pub console_oidc: Option<PathBuf>,

    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "EPOCHGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The certificate's private key (PEM).
    #[arg(long, env = "EPOCHGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// A validated `serve` configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub db: String,
    pub server: ServerConfig,
    /// `(certificate, key)` PEM files: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// What the running server needs (the part of [`ServeConfig`] handlers and background
/// tasks read).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub credentials: Credentials,
    /// Where the audit chain's head is appended (see `--audit-anchor`).
    pub audit_anchor: Option<PathBuf>,
    /// Edges seen within this window are live.
    pub edge_live_window: Duration,
    pub max_session_lifetime_s: u64,
    pub compact_interval: Duration,
    /// Sessions unseen for this long are dropped (`--session-idle`).
    pub session_idle: Duration,
    /// A console sign-in ends after this long idle (`--console-idle`).
    pub console_idle: Duration,
    /// The console's IdP sign-in (`--console-oidc`).
    pub console_oidc: Option<crate::console::oidc::OidcConfig>,
    /// How long a client may take to send a request's headers (HTTP/1.1). A slow client
    /// (slowloris) is disconnected after it, instead of holding a connection forever.
    pub header_read_timeout: Duration,
}

/// Why a `serve` configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: String },
    #[error("--edge-live-window must be at least 1 second")]
    ZeroLiveWindow,
    #[error("--max-session-lifetime must be at least 1 second")]
    ZeroLifetime,
    #[error("--compact-interval must be at least 1 second")]
    ZeroCompactInterval,
    #[error("--session-idle must be at least 1 second")]
    ZeroSessionIdle,
    #[error("--console-idle must be at least 1 second")]
    ZeroConsoleIdle,
    #[error("--console-oidc: {0}")]
    ConsoleOidc(String),
    #[error("--db must not be empty")]
    EmptyDb,
}

impl TryFrom<ServeArgs> for ServeConfig {
    type Error = ConfigError;

    fn try_from(args: ServeArgs) -> Result<Self, Self::Error> {
        if args.db.trim().is_empty() {
            return Err(ConfigError::EmptyDb);
        }
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| ConfigError::Read {
                path: path.display().to_string(),
                error: e.to_string(),
            })
        };
        let mut credentials = Credentials::new(args.admin_token.as_deref(), &args.edge_token)?;
        if let Some(path) = &args.api_keys {
            credentials = credentials.with_api_keys(parse_api_keys(&read(path)?)?)?;
        }
        if let Some(path) = &args.admin_jwt_config {
            credentials = credentials.with_admin_jwt(AdminJwt::from_json(&read(path)?)?);
        }
        if !credentials.has_admin() {
            return Err(CredentialsError::NoAdmin.into());
        }
        if args.edge_live_window == 0 {
            return Err(ConfigError::ZeroLiveWindow);
        }
        if args.session_idle == 0 {
            return Err(ConfigError::ZeroSessionIdle);
        }
        if args.console_idle == 0 {
            return Err(ConfigError::ZeroConsoleIdle);
        }
        let mut server = ServerConfig::with_credentials(
            credentials,
            args.max_session_lifetime,
            args.compact_interval,
        )?;
        server.audit_anchor = args.audit_anchor;
        server.edge_live_window = Duration::from_secs(args.edge_live_window);
        server.session_idle = Duration::from_secs(args.session_idle);
        server.console_idle = Duration::from_secs(args.console_idle);
        if let Some(path) = &args.console_oidc {
            server.console_oidc = Some(
                crate::console::oidc::OidcConfig::from_json(&read(path)?)
                    .map_err(ConfigError::ConsoleOidc)?,
            );
        }
        Ok(ServeConfig {
            listen: args.listen,
            db: args.db,
            server,
            tls: args.tls_cert.zip(args.tls_key),
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
        let credentials = Credentials::new(Some(admin_token), edge_token)?;
        Self::with_credentials(credentials, max_session_lifetime_s, compact_interval_s)
    }

    /// Validates the server settings with the given credentials; no anchor, a 90 s live
    /// window.
    pub fn with_credentials(
        credentials: Credentials,
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
            credentials,
            audit_anchor: None,
            edge_live_window: Duration::from_secs(90),
            max_session_lifetime_s,
            compact_interval: Duration::from_secs(compact_interval_s),
            session_idle: Duration::from_secs(1800),
            console_idle: Duration::from_secs(900),
            console_oidc: None,
            header_read_timeout: Duration::from_secs(10),
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
            admin_token: Some("a".repeat(16)),
            api_keys: None,
            admin_jwt_config: None,
            audit_anchor: None,
            edge_live_window: 90,
            edge_token: "e".repeat(16),
            max_session_lifetime: 3600,
            compact_interval: 60,
            session_idle: 1800,
            console_idle: 900,
            console_oidc: None,
            tls_cert: None,
            tls_key: None,
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
        a.admin_token = Some("short".into());
        assert!(matches!(
            ServeConfig::try_from(a),
            Err(ConfigError::Credentials(CredentialsError::Token(
                crate::auth::TokenError::TooShort { .. }
            )))
        ));
        let mut a = args();
        a.admin_token = None;
        assert!(matches!(
            ServeConfig::try_from(a),
            Err(ConfigError::Credentials(CredentialsError::NoAdmin))
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
        a.session_idle = 0;
        assert_eq!(
            ServeConfig::try_from(a).unwrap_err(),
            ConfigError::ZeroSessionIdle
        );
        let mut a = args();
        a.db = " ".into();
        assert_eq!(ServeConfig::try_from(a).unwrap_err(), ConfigError::EmptyDb);
    }
}
