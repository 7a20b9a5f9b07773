//! Who may do what.
//!
//! Three kinds of admin credential, one edge credential:
//! - the **admin token** (`--admin-token`, optional): a bootstrap credential, global, every
//!   scope — for a first setup and for the demo;
//! - **API keys** (`--api-keys FILE`) for automation: each with a name, a tenant (or `*`),
//!   and scopes; the file holds only their SHA-256 (`epochgate api-key create` makes one);
//! - **admin JWTs** (`--admin-jwt-config FILE`): verified by the same `epochgate-core`
//!   verifier the edges use (pinned algorithms, `kid`, JWK/PEM keys, `exp`/`nbf`/`iss`/
//!   `aud`; `issuer` and `audiences` required), carrying the tenant in the configured
//!   tenant claim (`tid`) and the scopes in `permissions` (a list) or `scope`
//!   (space-separated). Global rights come only from the claim and value the config's
//!   `global_admin` names — never from the tenant claim: tenant names are chosen at the
//!   IdP, and a tenant named `*` is refused;
//! - the shared **edge token** (`--edge-token`, optional; for the demo), which reads
//!   `/v1/sync` and nothing else. In production each edge has its own credential,
//!   kept in the store (`epochgate edge-token create`; see `api::edge_tokens`).
//!
//! An admin of tenant A can never act on tenant B; only an admin of `*` can act on every
//! tenant (`POST /v1/logout`). Refusals of an authenticated caller are audited by the
//! handlers (see `api::admin`).

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use epochgate_core::config::RawConfig;
use epochgate_core::ids::validate_id;
use epochgate_core::jwt;
use epochgate_core::{Config, Engine};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{check, Secret, TokenError};

/// A permission an admin credential can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Log out one user, revoke one session.
    Revoke,
    /// Log out every user of a tenant (and, for a global admin, of every tenant).
    RevokeAll,
    /// `GET /v1/audit` (a tenant admin sees its tenant's entries only).
    AuditRead,
    /// `GET /v1/edges`.
    EdgesRead,
    /// `GET /v1/tenants/{tenant}/revocations`.
    RevocationsRead,
    /// Create, list and revoke per-edge credentials (`/v1/edge-tokens`; every tenant).
    EdgesManage,
    /// `GET /v1/tenants/{tenant}/users` and a user's sessions (what the edges report).
    SessionsRead,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::Revoke,
        Scope::RevokeAll,
        Scope::AuditRead,
        Scope::EdgesRead,
        Scope::RevocationsRead,
        Scope::EdgesManage,
        Scope::SessionsRead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Revoke => "sessions:revoke",
            Scope::RevokeAll => "sessions:revoke_all",
            Scope::AuditRead => "audit:read",
            Scope::EdgesRead => "edges:read",
            Scope::RevocationsRead => "revocations:read",
            Scope::EdgesManage => "edges:manage",
            Scope::SessionsRead => "sessions:read",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The tenants a credential may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenants {
    /// `*`: every tenant, and the global logout.
    All,
    One(String),
}

impl Tenants {
    /// `*` is every tenant; anything else must be a valid id.
    pub fn parse(value: &str) -> Result<Tenants, String> {
        if value == "*" {
            return Ok(Tenants::All);
        }
        validate_id(value).map_err(|e| format!("tenant {e}"))?;
        Ok(Tenants::One(value.to_string()))
    }
}

impl fmt::Display for Tenants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tenants::All => f.write_str("*"),
            Tenants::One(t) => f.write_str(t),
        }
    }
}

/// An authenticated admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// The audit log's actor: `admin`, `key:<name>`, `jwt:<sub>`.
    pub actor: String,
    pub tenants: Tenants,
    pub scopes: BTreeSet<Scope>,
}

/// Why an admin may not do something (answered 403, and audited).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("this credential lacks the `{0}` permission")]
    MissingScope(Scope),
    #[error("this credential is for tenant {allowed:?}, not {asked:?}")]
    OtherTenant { allowed: String, asked: String },
    #[error("only an admin of every tenant (`*`) may act on every tenant; this credential is for tenant {0:?}")]
    NotGlobal(String),
}

impl Admin {
    /// Whether this admin may use `scope` on `tenant` (`None`: every tenant).
    pub fn authorize(&self, scope: Scope, tenant: Option<&str>) -> Result<(), Denied> {
        match (&self.tenants, tenant) {
            (Tenants::All, _) => {}
            (Tenants::One(mine), Some(asked)) if mine == asked => {}
            (Tenants::One(mine), Some(asked)) => {
                return Err(Denied::OtherTenant {
                    allowed: mine.clone(),
                    asked: asked.to_string(),
                })
            }
            (Tenants::One(mine), None) => return Err(Denied::NotGlobal(mine.clone())),
        }
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(Denied::MissingScope(scope))
        }
    }

    /// The tenant this admin is confined to, if any.
    pub fn tenant(&self) -> Option<&str> {
        match &self.tenants {
            Tenants::All => None,
            Tenants::One(t) => Some(t),
        }
    }
}

/// Who a bearer credential is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin(Admin),
    Edge,
}

/// Why a bearer credential is not accepted (answered 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the bearer token is not valid")]
    Unknown,
    #[error("the admin JWT is refused: {0}")]
    Jwt(String),
}

/// One API key as the `--api-keys` file lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    name: String,
    tenant: String,
    scopes: Vec<String>,
    /// Hex SHA-256 of the key.
    sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKeys {
    api_keys: Vec<RawApiKey>,
}

/// Why the credentials configuration is refused (at start, never on a request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("--api-keys: {0}")]
    ApiKeys(String),
    #[error("--admin-jwt-config: {0}")]
    AdminJwt(String),
    #[error("no admin credential: give --admin-token, --api-keys or --admin-jwt-config")]
    NoAdmin,
}

fn parse_scopes(list: &[String]) -> Result<BTreeSet<Scope>, String> {
    let mut scopes = BTreeSet::new();
    for name in list {
        let scope = Scope::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Scope::ALL.iter().map(|s| s.name()).collect();
            format!("unknown scope {name:?} (known: {})", known.join(", "))
        })?;
        scopes.insert(scope);
    }
    if scopes.is_empty() {
        return Err("`scopes` is empty".into());
    }
    Ok(scopes)
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Hex SHA-256 of a key: what the `--api-keys` file stores.
pub fn key_digest_hex(key: &str) -> String {
    hmac_sha256::Hash::hash(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Parses an `--api-keys` file: `{"api_keys": [{"name", "tenant", "scopes", "sha256"}]}`.
pub fn parse_api_keys(json: &[u8]) -> Result<HashMap<[u8; 32], Admin>, CredentialsError> {
    let e = CredentialsError::ApiKeys;
    let raw: RawApiKeys = {
        let de = &mut serde_json::Deserializer::from_slice(json);
        serde_path_to_error::deserialize(de)
            .map_err(|err| e(format!("at `{}`: {}", err.path(), err.inner())))?
    };
    let mut keys = HashMap::new();
    let mut names = BTreeSet::new();
    for (i, k) in raw.api_keys.into_iter().enumerate() {
        let at = |m: String| e(format!("api_keys[{i}]: {m}"));
        validate_id(&k.name).map_err(|err| at(format!("name {err}")))?;
        if !names.insert(k.name.clone()) {
            return Err(at(format!("name {:?} is listed twice", k.name)));
        }
        let tenants = Tenants::parse(&k.tenant).map_err(at)?;
        let scopes = parse_scopes(&k.scopes).map_err(at)?;
        let digest = parse_digest(&k.sha256).ok_or_else(|| {
            at("sha256 must be 64 hex digits (`epochgate api-key create`)".into())
        })?;
        let admin = Admin {
            actor: format!("key:{}", k.name),
            tenants,
            scopes,
        };
        if keys.insert(digest, admin).is_some() {
            return Err(at("the same key is listed twice".into()));
        }
    }
    Ok(keys)
}

/// Admin JWTs: the core verifier, plus where tenant, permissions and global rights are
/// read.
#[derive(Debug, Clone)]
pub struct AdminJwt {
    engine: Engine,
    global: Option<GlobalAdmin>,
}

/// The claim and value that make an admin JWT's holder an admin of every tenant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalAdmin {
    pub claim: String,
    pub value: String,
}

impl GlobalAdmin {
    /// The claim is the value, or a list that holds it (`groups`, `roles`).
    fn granted_by(&self, claims: &serde_json::Map<String, Value>) -> bool {
        match claims.get(&self.claim) {
            Some(Value::String(v)) => *v == self.value,
            Some(Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(&self.value)),
            _ => false,
        }
    }
}

impl AdminJwt {
    /// Parses the core configuration (`keys`, `issuer`, `audiences`, `claims`, …) plus
    /// `global_admin: {"claim", "value"}`. `issuer` and an audience are required: without
    /// them any token these keys verify — a portal user's, another client's — would be
    /// presented here as an admin credential. Global rights come only from
    /// `global_admin`, never from the tenant claim: tenant names are chosen at the IdP,
    /// and someone can name theirs `*`.
    pub fn from_json(json: &[u8]) -> Result<Self, CredentialsError> {
        let e = |m: String| CredentialsError::AdminJwt(m);
        let mut doc: serde_json::Map<String, Value> =
            serde_json::from_slice(json).map_err(|err| e(format!("not a JSON object: {err}")))?;
        let global = doc
            .remove("global_admin")
            .map(|g| {
                serde_json::from_value::<GlobalAdmin>(g)
                    .map_err(|err| e(format!("config field `global_admin`: {err}")))
            })
            .transpose()?;
        if let Some(g) = &global {
            if g.claim.is_empty() || g.value.is_empty() {
                return Err(e(
                    "config field `global_admin`: `claim` and `value` must be set".into(),
                ));
            }
        }
        if doc.contains_key("default_tenant") {
            return Err(e(
                "config field `default_tenant`: admin JWTs carry their tenant in the tenant claim"
                    .into(),
            ));
        }
        let raw: RawConfig = serde_json::from_value(Value::Object(doc))
            .map_err(|err| e(format!("not a valid configuration: {err}")))?;
        let mut config = Config::try_from(raw).map_err(|err| e(err.to_string()))?;
        if config.issuer.is_none() {
            return Err(e(
                "`issuer` is required: admin rights come from the IdP you name, not from any \
                 token these keys verify"
                    .into(),
            ));
        }
        if config.audiences.is_empty() {
            return Err(e(
                "`audiences` must name the control plane's audience, so that no other token \
                 of the IdP passes as an admin credential"
                    .into(),
            ));
        }
        if global
            .as_ref()
            .is_some_and(|g| g.claim == config.claims.tenant)
        {
            return Err(e(
                "config field `global_admin.claim` must not be the tenant claim".into(),
            ));
        }
        // The verifier needs a tenant to build an identity; `verify` reads the tenant
        // claim itself, so this placeholder never grants anything.
        config.default_tenant = Some(NO_TENANT.into());
        Ok(AdminJwt {
            engine: Engine::new(config),
            global,
        })
    }

    fn verify(&self, token: &str, now_ms: u64) -> Result<Admin, AuthError> {
        let config = self.engine.config();
        let identity = self
            .engine
            .verify_token(token, now_ms)
            .map_err(|e| AuthError::Jwt(e.to_string()))?;
        // Verified above: parsing again only reads the claims.
        let parsed =
            jwt::parse(token, config.max_token_bytes).map_err(|e| AuthError::Jwt(e.to_string()))?;
        let tenant_claim = &config.claims.tenant;
        let tenants = if self
            .global
            .as_ref()
            .is_some_and(|g| g.granted_by(&parsed.claims))
        {
            Tenants::All
        } else {
            match parsed.claims.get(tenant_claim) {
                Some(Value::String(t)) if t == "*" => {
                    return Err(AuthError::Jwt(format!(
                        "the tenant claim `{tenant_claim}` is \"*\": a tenant name, never global \
                         rights (those come from the admin-JWT config's global_admin claim)"
                    )))
                }
                // The claim is there, so the identity's tenant is it (validated as an id).
                Some(Value::String(_)) => Tenants::One(identity.tenant.clone()),
                _ => {
                    return Err(AuthError::Jwt(format!(
                        "no tenant claim `{tenant_claim}`, and not a global admin (global_admin)"
                    )))
                }
            }
        };
        let names: Vec<String> =
            match (parsed.claims.get("permissions"), parsed.claims.get("scope")) {
                (Some(Value::Array(list)), _) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                (None, Some(Value::String(s))) => {
                    s.split_whitespace().map(str::to_string).collect()
                }
                _ => Vec::new(),
            };
        // Scopes the control plane does not know (an IdP's other permissions) are ignored.
        let scopes = names.iter().filter_map(|n| Scope::parse(n)).collect();
        Ok(Admin {
            actor: format!("jwt:{}", identity.user),
            tenants,
            scopes,
        })
    }
}

/// The admin verifier's placeholder tenant (see [`AdminJwt::from_json`]): not a valid id
/// anywhere else, since it holds a control character.
const NO_TENANT: &str = "\u{1}no tenant claim";

/// Every configured credential.
#[derive(Debug, Clone)]
pub struct Credentials {
    admin_token: Option<Secret>,
    edge: Option<Secret>,
    api_keys: HashMap<[u8; 32], Admin>,
    jwt: Option<AdminJwt>,
}

impl Credentials {
    /// The admin token (if any) and the edge token: the two must differ, each at least 16
    /// characters.
    pub fn new(admin_token: Option<&str>, edge_token: &str) -> Result<Self, CredentialsError> {
        Self::with_edge_token(admin_token, Some(edge_token))
    }

    /// Like [`Credentials::new`], the shared edge token optional (edges then sync only
    /// with their own stored credentials).
    pub fn with_edge_token(
        admin_token: Option<&str>,
        edge_token: Option<&str>,
    ) -> Result<Self, CredentialsError> {
        if let Some(edge) = edge_token {
            check("the edge token", edge)?;
        }
        if let Some(admin) = admin_token {
            check("the admin token", admin)?;
            if Some(admin) == edge_token {
                return Err(TokenError::Same.into());
            }
        }
        Ok(Credentials {
            admin_token: admin_token.map(Secret::new),
            edge: edge_token.map(Secret::new),
            api_keys: HashMap::new(),
            jwt: None,
        })
    }

    pub fn with_api_keys(
        mut self,
        keys: HashMap<[u8; 32], Admin>,
    ) -> Result<Self, CredentialsError> {
        if keys
            .keys()
            .any(|d| self.edge.as_ref().is_some_and(|e| e.digest() == *d))
        {
            return Err(CredentialsError::ApiKeys(
                "an API key equals the edge token".into(),
            ));
        }
        self.api_keys = keys;
        Ok(self)
    }

    pub fn with_admin_jwt(mut self, jwt: AdminJwt) -> Self {
        self.jwt = Some(jwt);
        self
    }

    /// Whether an API key names `tenant` (used to warn about a tenant never seen).
    pub fn mentions_tenant(&self, tenant: &str) -> bool {
        self.api_keys
            .values()
            .any(|a| a.tenants == Tenants::One(tenant.to_string()))
    }

    /// Whether a token with this SHA-256 is the admin token, the shared edge token or an API key
    /// (so no other credential may reuse it).
    pub fn is_credential_digest(&self, digest: &[u8; 32]) -> bool {
        self.edge.as_ref().is_some_and(|s| s.digest() == *digest)
            || self
                .admin_token
                .as_ref()
                .is_some_and(|s| s.digest() == *digest)
            || self.api_keys.contains_key(digest)
    }

    /// Whether any admin credential is configured.
    pub fn has_admin(&self) -> bool {
        self.admin_token.is_some() || !self.api_keys.is_empty() || self.jwt.is_some()
    }

    /// Who `presented` is. A JWT (three dot-separated segments) is only ever checked as an
    /// admin JWT; anything else against the tokens and the API keys' digests.
    pub fn authenticate(&self, presented: &str, now_ms: u64) -> Result<Principal, AuthError> {
        if presented.split('.').count() == 3 {
            if let Some(jwt) = &self.jwt {
                return jwt.verify(presented, now_ms).map(Principal::Admin);
            }
        }
        let admin = self
            .admin_token
            .as_ref()
            .is_some_and(|s| s.matches(presented));
        let edge = self.edge.as_ref().is_some_and(|s| s.matches(presented));
        if admin {
            return Ok(Principal::Admin(Admin {
                actor: "admin".into(),
                tenants: Tenants::All,
                scopes: Scope::ALL.into_iter().collect(),
            }));
        }
        if edge {
            return Ok(Principal::Edge);
        }
        let digest = hmac_sha256::Hash::hash(presented.as_bytes());
        self.api_keys
            .get(&digest)
            .cloned()
            .map(Principal::Admin)
            .ok_or(AuthError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EDGE: &str = "edge-token-0123456789";

    fn admin(tenants: Tenants, scopes: &[Scope]) -> Admin {
        Admin {
            actor: "t".into(),
            tenants,
            scopes: scopes.iter().copied().collect(),
        }
    }

    #[test]
    fn a_tenant_admin_stays_in_its_tenant() {
        let a = admin(
            Tenants::One("acme".into()),
            &[Scope::Revoke, Scope::RevokeAll],
        );
        assert_eq!(a.authorize(Scope::Revoke, Some("acme")), Ok(()));
        assert!(matches!(
            a.authorize(Scope::Revoke, Some("globex")),
            Err(Denied::OtherTenant { .. })
        ));
        assert!(matches!(
            a.authorize(Scope::RevokeAll, None),
            Err(Denied::NotGlobal(_))
        ));
        assert_eq!(
            a.authorize(Scope::AuditRead, Some("acme")),
            Err(Denied::MissingScope(Scope::AuditRead))
        );
        let g = admin(Tenants::All, &[Scope::RevokeAll]);
        assert_eq!(g.authorize(Scope::RevokeAll, None), Ok(()));
        assert_eq!(
            g.authorize(Scope::Revoke, Some("x")),
            Err(Denied::MissingScope(Scope::Revoke))
        );
    }

    #[test]
    fn api_keys_file_is_checked() {
        let key = "eg_0123456789abcdef0123456789";
        let json = format!(
            r#"{{"api_keys":[{{"name":"ci","tenant":"acme","scopes":["sessions:revoke"],"sha256":"{}"}}]}}"#,
            key_digest_hex(key)
        );
        let keys = parse_api_keys(json.as_bytes()).unwrap();
        let c = Credentials::new(None, EDGE)
            .unwrap()
            .with_api_keys(keys)
            .unwrap();
        let Principal::Admin(a) = c.authenticate(key, 0).unwrap() else {
            panic!("not an admin")
        };
        assert_eq!(a.actor, "key:ci");
        assert_eq!(a.tenants, Tenants::One("acme".into()));
        assert_eq!(c.authenticate(EDGE, 0), Ok(Principal::Edge));
        assert_eq!(c.authenticate("eg_other", 0), Err(AuthError::Unknown));

        for (bad, needle) in [
            (
                r#"{"api_keys":[{"name":"ci","tenant":"acme","scopes":["sessions:nuke"],"sha256":"00"}]}"#,
                "unknown scope",
            ),
            (
                r#"{"api_keys":[{"name":"ci","tenant":"acme","scopes":[],"sha256":"00"}]}"#,
                "empty",
            ),
            (
                r#"{"api_keys":[{"name":"ci","tenant":"acme","scopes":["audit:read"],"sha256":"00"}]}"#,
                "64 hex",
            ),
            (
                r#"{"api_keys":[{"name":"","tenant":"acme","scopes":["audit:read"],"sha256":"00"}]}"#,
                "name",
            ),
            (
                r#"{"api_keys":[{"name":"ci","tenant":"acme","scopes":["audit:read"],"sha":"00"}]}"#,
                "sha",
            ),
        ] {
            let err = parse_api_keys(bad.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn admin_jwt_config_requires_an_issuer_and_an_audience() {
        let keys =
            r#""keys":[{"kid":"a","alg":"HS256","secret":"0123456789abcdef0123456789abcdef"}]"#;
        let err = |json: String| {
            AdminJwt::from_json(json.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(err(format!(r#"{{{keys}, "issuer": "https://idp"}}"#)).contains("audiences"));
        assert!(err(format!(r#"{{{keys}, "audiences": ["cp"]}}"#)).contains("`issuer` is required"));
        let ok = format!(r#"{{{keys}, "issuer": "https://idp", "audiences": ["cp"]}}"#);
        assert!(AdminJwt::from_json(ok.as_bytes()).is_ok());
    }

    #[test]
    fn global_admin_rights_are_configured_by_claim_and_value_only() {
        let base = r#""keys":[{"kid":"a","alg":"HS256","secret":"0123456789abcdef0123456789abcdef"}], "issuer": "https://idp", "audiences": ["cp"]"#;
        let err = |extra: &str| {
            AdminJwt::from_json(format!("{{{base}, {extra}}}").as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#""global_admin": {"claim": "role"}"#).contains("global_admin"));
        assert!(
            err(r#""global_admin": {"claim": "role", "value": "g", "x": 1}"#)
                .contains("global_admin")
        );
        assert!(err(r#""global_admin": {"claim": "", "value": "g"}"#).contains("must be set"));
        assert!(err(r#""global_admin": {"claim": "tid", "value": "*"}"#).contains("tenant claim"));
        assert!(err(r#""default_tenant": "acme""#).contains("tenant claim"));
        let g = GlobalAdmin {
            claim: "groups".into(),
            value: "ops".into(),
        };
        let claims = |v: Value| {
            let mut m = serde_json::Map::new();
            m.insert("groups".into(), v);
            m
        };
        assert!(g.granted_by(&claims(Value::from("ops"))));
        assert!(g.granted_by(&claims(serde_json::json!(["dev", "ops"]))));
        assert!(!g.granted_by(&claims(Value::from("ops2"))));
        assert!(!g.granted_by(&claims(Value::from(true))));
    }

    #[test]
    fn no_admin_token_equal_to_the_edge_token() {
        assert!(matches!(
            Credentials::new(Some(EDGE), EDGE),
            Err(CredentialsError::Token(TokenError::Same))
        ));
        assert!(matches!(
            Credentials::new(None, "short"),
            Err(CredentialsError::Token(TokenError::TooShort { .. }))
        ));
    }
}
