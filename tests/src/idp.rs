//! A real OpenID Provider for the tests (npm `oidc-provider`, `tests/idp/provider.mjs`),
//! a browser stand-in that signs in with the authorization code flow over plain HTTP
//! (cookies, redirects, PKCE, the provider's dev login form), and Python's PyJWT
//! (`tests/idp/mint.py`, in `.venv-tools`) to mint logout tokens and SETs with an
//! independent JWT library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use crate::{artefact, http, repo_root, spawn, wait_for, Proc, Response};

/// The provider's client, as `provider.mjs` registers it.
pub const CLIENT_ID: &str = "portal";
pub const CLIENT_SECRET: &str = "portal-client-secret-0123456789";
pub const REDIRECT_URI: &str = "http://127.0.0.1/callback";
pub const POST_LOGOUT_URI: &str = "http://127.0.0.1/signed-out";
/// The access tokens' audience (the resource indicator).
pub const RESOURCE: &str = "https://api.portal.test";

/// `node`, from the PATH.
fn node() -> PathBuf {
    PathBuf::from(std::env::var_os("NODE").unwrap_or_else(|| "node".into()))
}

/// `oidc-provider` running on 127.0.0.1, killed on drop.
pub struct OidcProvider {
    pub port: u16,
    pub issuer: String,
    pub proc: Proc,
}

impl OidcProvider {
    /// Starts the provider on `port`, posting logout tokens to `backchannel_logout_uri`.
    pub fn start(dir: &Path, port: u16, backchannel_logout_uri: &str) -> Self {
        artefact(
            "EPOCHGATE_OIDC_PROVIDER",
            repo_root().join("node_modules/oidc-provider/package.json"),
            "npm ci",
        );
        let mut cmd = Command::new(node());
        cmd.arg(repo_root().join("tests/idp/provider.mjs"))
            .env("IDP_PORT", port.to_string())
            .env("IDP_BACKCHANNEL_URI", backchannel_logout_uri);
        let proc = spawn("oidc-provider", cmd, dir.join("oidc-provider.log"));
        let issuer = format!("http://127.0.0.1:{port}");
        wait_for("oidc-provider to listen", Duration::from_secs(30), || {
            http::request("127.0.0.1", port, "GET", "/jwks", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        });
        OidcProvider { port, issuer, proc }
    }

    /// Its JWKS, as the edge's filter takes it inline.
    pub fn jwks(&self) -> Value {
        http::request("127.0.0.1", self.port, "GET", "/jwks", &[], b"")
            .unwrap()
            .json()
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// The IdP ends every session of `sub` (an admin's "sign out" at the IdP): it posts a
    /// `sub`-only logout token and answers once the receiver did.
    pub fn end_sessions(&self, sub: &str) -> Response {
        http::request(
            "127.0.0.1",
            self.port,
            "POST",
            "/test/end-sessions",
            &[("content-type", b"application/x-www-form-urlencoded")],
            format!("sub={}", form_encode(sub)).as_bytes(),
        )
        .unwrap()
    }
}

/// What a sign-in yields.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub access_token: String,
    pub id_token: String,
}

impl SignedIn {
    /// A claim of the access token (decoded, not verified).
    pub fn access_claim(&self, name: &str) -> Value {
        jwt_claims(&self.access_token)[name].clone()
    }
}

/// A JWT's claims, decoded without verification.
pub fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

pub fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One browser: a cookie jar for the provider, redirects followed by hand.
pub struct Browser<'a> {
    idp: &'a OidcProvider,
    cookies: BTreeMap<String, String>,
}

impl<'a> Browser<'a> {
    pub fn new(idp: &'a OidcProvider) -> Self {
        Browser {
            idp,
            cookies: BTreeMap::new(),
        }
    }

    fn send(&mut self, method: &str, path_or_url: &str, form: Option<&str>) -> Response {
        let path = path_or_url
            .strip_prefix(&self.idp.issuer)
            .unwrap_or(path_or_url);
        assert!(
            path.starts_with('/'),
            "a redirect off the provider: {path_or_url}"
        );
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut headers: Vec<(&str, &[u8])> = vec![("cookie", cookie.as_bytes())];
        if form.is_some() {
            headers.push(("content-type", b"application/x-www-form-urlencoded"));
        }
        let r = http::request(
            "127.0.0.1",
            self.idp.port,
            method,
            path,
            &headers,
            form.unwrap_or_default().as_bytes(),
        )
        .unwrap();
        for (name, value) in &r.headers {
            if name != "set-cookie" {
                continue;
            }
            let pair = value.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                let expired = value
                    .to_ascii_lowercase()
                    .contains("expires=thu, 01 jan 1970");
                if v.is_empty() || expired {
                    self.cookies.remove(k.trim());
                } else {
                    self.cookies.insert(k.trim().to_string(), v.to_string());
                }
            }
        }
        r
    }

    fn location(r: &Response) -> String {
        assert!(
            (300..400).contains(&r.status),
            "expected a redirect, got {}: {}",
            r.status,
            r.text()
        );
        r.header("location").unwrap().to_string()
    }

    /// Signs `user` in (a real login: `prompt=login`) with the code flow and PKCE, and
    /// redeems the code at the token endpoint.
    pub fn sign_in(&mut self, user: &str) -> SignedIn {
        // PKCE (RFC 7636): a verifier unique to this sign-in, its S256 challenge.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let verifier = URL_SAFE_NO_PAD.encode(hmac_sha256::Hash::hash(
            format!("{nanos}/{user}").as_bytes(),
        ));
        let challenge = URL_SAFE_NO_PAD.encode(hmac_sha256::Hash::hash(verifier.as_bytes()));
        let query = format!(
            "/auth?client_id={CLIENT_ID}&response_type=code&scope=openid&prompt=login\
             &redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256&resource={}",
            form_encode(REDIRECT_URI),
            form_encode(RESOURCE)
        );
        let r = self.send("GET", &query, None);
        let mut next = Self::location(&r);
        let mut code = None;
        for _ in 0..10 {
            if let Some(q) = next.strip_prefix(&format!("{REDIRECT_URI}?")) {
                code = q
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("code="))
                    .map(str::to_string);
                break;
            }
            if next.starts_with("/interaction/") {
                let page = self.send("GET", &next, None);
                assert_eq!(page.status, 200, "{}", page.text());
                let form = if page.text().contains("name=\"login\"") {
                    format!("prompt=login&login={}&password=x", form_encode(user))
                } else {
                    "prompt=consent".to_string()
                };
                let r = self.send("POST", &next, Some(&form));
                next = Self::location(&r);
            } else {
                let r = self.send("GET", &next, None);
                next = Self::location(&r);
            }
        }
        let code = code.unwrap_or_else(|| panic!("no code; last redirect {next}"));
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
        let auth = format!("Basic {basic}");
        let body = format!(
            "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={verifier}&resource={}",
            form_encode(REDIRECT_URI),
            form_encode(RESOURCE)
        );
        let r = http::request(
            "127.0.0.1",
            self.idp.port,
            "POST",
            "/token",
            &[
                ("content-type", b"application/x-www-form-urlencoded"),
                ("authorization", auth.as_bytes()),
            ],
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 200, "token endpoint: {}", r.text());
        let v = r.json();
        SignedIn {
            access_token: v["access_token"].as_str().unwrap().to_string(),
            id_token: v["id_token"].as_str().unwrap().to_string(),
        }
    }

    /// Starts an RP-initiated logout and returns the confirmation form's `xsrf`; the
    /// confirmation itself is [`Browser::confirm_sign_out`] (so a test can time it).
    pub fn start_sign_out(&mut self, signed_in: &SignedIn) -> String {
        let path = format!(
            "/session/end?id_token_hint={}&post_logout_redirect_uri={}",
            signed_in.id_token,
            form_encode(POST_LOGOUT_URI)
        );
        let page = self.send("GET", &path, None);
        assert_eq!(page.status, 200, "{}", page.text());
        let text = page.text();
        let start = text.find("name=\"xsrf\" value=\"").unwrap() + "name=\"xsrf\" value=\"".len();
        text[start..start + text[start..].find('"').unwrap()].to_string()
    }

    /// Confirms the logout (`logout=yes`): the provider posts the logout tokens and
    /// answers once they were delivered.
    pub fn confirm_sign_out(&mut self, xsrf: &str) -> Response {
        let r = self.send(
            "POST",
            "/session/end/confirm",
            Some(&format!("xsrf={}&logout=yes", form_encode(xsrf))),
        );
        assert_eq!(
            Self::location(&r),
            POST_LOGOUT_URI,
            "the provider finished the logout"
        );
        r
    }
}

/// The Python of `.venv-tools` (PyJWT, cryptography), installed by `make idp-tools`.
pub fn python() -> PathBuf {
    artefact(
        "EPOCHGATE_PYTHON",
        repo_root().join(".venv-tools/bin/python"),
        "make idp-tools",
    )
}

/// Runs `tests/idp/mint.py` with `request` on stdin; its JSON answer.
pub fn pyjwt(request: &Value) -> Value {
    use std::io::Write;
    let started = Instant::now();
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/idp/mint.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mint.py failed ({:?}): {}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
