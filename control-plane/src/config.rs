//! `epochgate serve` configuration, in two phases: [`ServeArgs`] as clap parses it (flags
//! and environment), compiled by `TryFrom` into a validated [`ServeConfig`] with typed
//! errors, so a bad setting stops the process at start and never shows up on a request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::idp::config::{IdpConfigError, ProcessEnv};
use crate::idp::IdpConfig;
use crate::rbac::{parse_api_keys, AdminJwt, Credentials, CredentialsError};
use crate::store::PgOptions;

/// The longest a sync long-poll is held, whatever the edge asks.
pub const MAX_WAIT_S: u64 = 60;

/// `--max-session-lifetime`'s default: 90 days.
pub const DEFAULT_MAX_SESSION_LIFETIME_S: u64 = 90 * 24 * 3600;

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Flags of `epochgate serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Serve `/metrics` on this address only (not on --listen), e.g. an address only
    /// the scraper reaches. Port 0 picks one (printed as `metrics on http://ADDR`).
    #[arg(long, env = "EPOCHGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// `text`, or `json` (one object per line) for log shippers. Every request is logged
    /// when answered (method, route, status, latency, credential name, request id).
    #[arg(long, env = "EPOCHGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Address to listen on; port 0 picks a free port (the chosen address is printed
    /// to stdout as `listening on http://ADDR`).
    #[arg(long, env = "EPOCHGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The store: `sqlite://PATH` or a plain file path (created if missing), or
    /// `postgres://USER@HOST:PORT/DB[?sslmode=verify-full&sslrootcert=ca.pem]`.
    #[arg(long, env = "EPOCHGATE_DB", default_value = "epochgate.db")]
    pub db: String,

    #[command(flatten)]
    pub db_options: DbArgs,

    /// Bootstrap bearer token for the admin API (at least 16 characters): a global
    /// admin with every permission. Optional when --api-keys or --admin-jwt-config is set.
    /// Prefer --admin-token-file or the environment: flags show in `ps`.
    #[arg(long, env = "EPOCHGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// A file holding the admin token (one line), instead of --admin-token.
    #[arg(
        long,
        env = "EPOCHGATE_ADMIN_TOKEN_FILE",
        conflicts_with = "admin_token"
    )]
    pub admin_token_file: Option<PathBuf>,

    /// A JSON file of API keys for automation, stored hashed:
    /// `{"api_keys": [{"name", "tenant" ("*" = every tenant), "scopes": [...], "sha256"}]}`
    /// (`epochgate api-key create` prints an entry).
    #[arg(long, env = "EPOCHGATE_API_KEYS")]
    pub api_keys: Option<PathBuf>,

    /// A JSON file configuring admin JWTs, in the filter's format (`keys`, `issuer` and
    /// `audiences` (both required), `claims`) plus `global_admin: {"claim", "value"}`; the
    /// tenant claim (`tid`) holds the tenant (`*` there is refused), the `global_admin`
    /// claim and value make a global admin, and `permissions` (list) or `scope`
    /// (space-separated) hold the permissions.
    #[arg(long, env = "EPOCHGATE_ADMIN_JWT_CONFIG")]
    pub admin_jwt_config: Option<PathBuf>,

    /// Append-only file that receives the audit chain's head after every audit entry
    /// (`{"id","hash"}` per line). Keep it where whoever can write the database cannot
    /// (another volume or user, `chattr +a`); `epochgate audit verify --anchor` checks the
    /// chain against it, so deleting the newest entries is detected.
    #[arg(long, env = "EPOCHGATE_AUDIT_ANCHOR")]
    pub audit_anchor: Option<PathBuf>,

    /// A JSON file listing the identity providers whose logouts are received
    /// (`{"idps": [{"name", "issuer", "discovery_url" | "jwks_uri" | "jwks", "client_id",
    /// "tenant", "events", "ssf"}]}`): OIDC Back-Channel Logout at
    /// `/v1/idp/{name}/backchannel-logout`, Shared Signals SETs at `/v1/idp/{name}/events`.
    #[arg(long, env = "EPOCHGATE_IDP_CONFIG")]
    pub idp_config: Option<PathBuf>,

    /// An edge is live (counted by `?wait=` receipts) if it polled within this many
    /// seconds. Keep it above the edges' long-poll `wait_s`.
    #[arg(long, env = "EPOCHGATE_EDGE_LIVE_WINDOW", default_value_t = 90)]
    pub edge_live_window: u64,

    /// DEMO: one bearer token every edge may use for `GET /v1/sync` (at least 16
    /// characters, not the admin token). Any holder can report as any edge; in
    /// production give each edge its own (`epochgate edge-token create`) and leave this
    /// out. Prefer --edge-token-file or the environment: flags show in `ps`.
    #[arg(long, env = "EPOCHGATE_EDGE_TOKEN", hide_env_values = true)]
    pub edge_token: Option<String>,

    /// A file holding the edge token (one line), instead of --edge-token.
    #[arg(long, env = "EPOCHGATE_EDGE_TOKEN_FILE", conflicts_with = "edge_token")]
    pub edge_token_file: Option<PathBuf>,

    /// The longest a login can keep producing valid tokens (the IdP's absolute
    /// refresh-token / session lifetime), in seconds. Entries older than this are
    /// compacted away, and the edges deny sessions older than this (`session_expired`).
    /// The default, 90 days, lets a mobile app keep its users signed in for a quarter.
    #[arg(long, env = "EPOCHGATE_MAX_SESSION_LIFETIME", default_value_t = DEFAULT_MAX_SESSION_LIFETIME_S)]
    pub max_session_lifetime: u64,

    /// Seconds between compaction runs.
    #[arg(long, env = "EPOCHGATE_COMPACT_INTERVAL", default_value_t = 60)]
    pub compact_interval: u64,

    /// The most connections served at once; past it new clients wait in the kernel's
    /// queue until one closes.
    #[arg(long, env = "EPOCHGATE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Seconds shutdown (SIGTERM, Ctrl-C) waits for in-flight requests before cutting
    /// them (open long-polls are answered at once).
    #[arg(long, env = "EPOCHGATE_DRAIN_TIMEOUT", default_value_t = 20)]
    pub drain_timeout: u64,

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

/// How `serve` and `audit verify` reach a Postgres store (ignored for SQLite).
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// A file holding the database password (one line); it replaces the URL's, so the
    /// URL need not hold one. `EPOCHGATE_DB_PASSWORD` does the same from the environment.
    #[arg(long, env = "EPOCHGATE_DB_PASSWORD_FILE")]
    pub db_password_file: Option<PathBuf>,

    /// The database password from the environment only (no flag: flags show in `ps`).
    #[arg(skip = std::env::var("EPOCHGATE_DB_PASSWORD").ok())]
    pub db_password: Option<String>,

    /// The most Postgres connections this process opens (besides its listener's).
    #[arg(long, env = "EPOCHGATE_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,

    /// Seconds a request waits for a free Postgres connection (and a new one to connect)
    /// before it fails.
    #[arg(long, env = "EPOCHGATE_DB_POOL_TIMEOUT", default_value_t = 5)]
    pub db_pool_timeout: u64,
}

impl DbArgs {
    /// The Postgres options, the password read from its file.
    pub fn pg_options(&self) -> Result<PgOptions, ConfigError> {
        if self.db_pool_size == 0 {
            return Err(ConfigError::ZeroPoolSize);
        }
        if self.db_pool_timeout == 0 {
            return Err(ConfigError::ZeroPoolTimeout);
        }
        Ok(PgOptions {
            password: secret(
                "EPOCHGATE_DB_PASSWORD",
                self.db_password.clone(),
                self.db_password_file.as_deref(),
            )?,
            pool_size: self.db_pool_size,
            pool_timeout: Duration::from_secs(self.db_pool_timeout),
        })
    }
}

/// A secret given directly (flag or environment) or in a file (its first line; a
/// trailing newline is not part of it). Both at once is refused, as is an empty file.
pub fn secret(
    name: &'static str,
    value: Option<String>,
    file: Option<&Path>,
) -> Result<Option<String>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::SecretTwice(name)),
        (Some(v), None) => Ok(Some(v)),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                path: path.display().to_string(),
                error: e.to_string(),
            })?;
            let line = text
                .lines()
                .next()
                .unwrap_or_default()
                .trim_end()
                .to_string();
            if line.is_empty() {
                return Err(ConfigError::EmptySecretFile {
                    path: path.display().to_string(),
                });
            }
            Ok(Some(line))
        }
    }
}

/// A validated `serve` configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// `/metrics` on its own listener (then not on `listen`).
    pub metrics_listen: Option<SocketAddr>,
    pub db: String,
    /// How to reach a Postgres store (password, pool).
    pub pg: PgOptions,
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
    /// `/metrics` is served on its own listener (`--metrics-listen`), not by [`crate::app`].
    pub metrics_separate: bool,
    /// The most connections served at once; past it the server stops accepting until
    /// one closes (the kernel queues the rest).
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests before cutting them.
    pub drain_timeout: Duration,
    /// The identity providers whose logouts are received (`--idp-config`).
    pub idps: Vec<IdpConfig>,
}

/// Why a `serve` configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Idp(#[from] IdpConfigError),
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
    #[error("--max-connections must be at least 1")]
    ZeroMaxConnections,
    #[error("--db-pool-size must be at least 1")]
    ZeroPoolSize,
    #[error("--db-pool-timeout must be at least 1 second")]
    ZeroPoolTimeout,
    #[error("{0} is given twice (directly and as a file); give one")]
    SecretTwice(&'static str),
    #[error("the secret file {path} is empty")]
    EmptySecretFile { path: String },
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
        let admin_token = secret(
            "the admin token",
            args.admin_token,
            args.admin_token_file.as_deref(),
        )?;
        let edge_token = secret(
            "the edge token",
            args.edge_token,
            args.edge_token_file.as_deref(),
        )?;
        let pg = args.db_options.pg_options()?;
        let mut credentials =
            Credentials::with_edge_token(admin_token.as_deref(), edge_token.as_deref())?;
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
        if let Some(path) = &args.idp_config {
            let idps = crate::idp::config::parse(&read(path)?, &ProcessEnv)?;
            for idp in &idps {
                if let Some(ssf) = &idp.ssf {
                    if server
                        .credentials
                        .is_credential_digest(&ssf.bearer.digest())
                    {
                        return Err(IdpConfigError(format!(
                            "IdP {:?}: the SSF push token is also an admin or edge credential; give the transmitter a token of its own",
                            idp.name
                        ))
                        .into());
                    }
                }
            }
            server.idps = idps;
        }
        server.audit_anchor = args.audit_anchor;
        server.metrics_separate = args.metrics_listen.is_some();
        if args.max_connections == 0 {
            return Err(ConfigError::ZeroMaxConnections);
        }
        server.max_connections = args.max_connections;
        server.drain_timeout = Duration::from_secs(args.drain_timeout);
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
            metrics_listen: args.metrics_listen,
            db: args.db,
            pg,
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
            metrics_separate: false,
            max_connections: 1024,
            drain_timeout: Duration::from_secs(20),
            idps: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: None,
            log_format: LogFormat::Text,
            db: "x.db".into(),
            db_options: DbArgs {
                db_password_file: None,
                db_password: None,
                db_pool_size: 16,
                db_pool_timeout: 5,
            },
            admin_token: Some("a".repeat(16)),
            admin_token_file: None,
            api_keys: None,
            admin_jwt_config: None,
            audit_anchor: None,
            idp_config: None,
            edge_live_window: 90,
            edge_token: Some("e".repeat(16)),
            edge_token_file: None,
            max_session_lifetime: 3600,
            compact_interval: 60,
            max_connections: 1024,
            drain_timeout: 20,
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
        let mut a = args();
        a.db_options.db_pool_size = 0;
        assert_eq!(
            ServeConfig::try_from(a).unwrap_err(),
            ConfigError::ZeroPoolSize
        );
    }

    #[test]
    fn secrets_come_from_files_without_their_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("edge-token");
        std::fs::write(&file, "edge-token-from-a-file-0123\n").unwrap();
        let mut a = args();
        a.edge_token = None;
        a.edge_token_file = Some(file.clone());
        let cfg = ServeConfig::try_from(a).unwrap();
        assert!(matches!(
            cfg.server
                .credentials
                .authenticate("edge-token-from-a-file-0123", 0),
            Ok(crate::rbac::Principal::Edge)
        ));
        let mut a = args();
        a.edge_token_file = Some(file.clone());
        assert_eq!(
            ServeConfig::try_from(a).unwrap_err(),
            ConfigError::SecretTwice("the edge token")
        );
        std::fs::write(&file, "\n").unwrap();
        let mut a = args();
        a.edge_token = None;
        a.edge_token_file = Some(file);
        assert!(matches!(
            ServeConfig::try_from(a).unwrap_err(),
            ConfigError::EmptySecretFile { .. }
        ));
        let mut a = args();
        a.admin_token = None;
        a.admin_token_file = Some(dir.path().join("missing"));
        assert!(matches!(
            ServeConfig::try_from(a).unwrap_err(),
            ConfigError::Read { .. }
        ));
        let mut a = args();
        a.db_options.db_password = Some("pw-env".into());
        assert_eq!(
            ServeConfig::try_from(a).unwrap().pg.password.as_deref(),
            Some("pw-env")
        );
    }
}
