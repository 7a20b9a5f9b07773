//! How the control plane reaches Postgres: the URL (libpq's `sslmode` and `sslrootcert`
//! included), a password from outside the URL, the pool's size and timeout, and TLS with
//! rustls.
//!
//! `sslmode` as libpq means it:
//! - `disable` (the default here): no TLS.
//! - `require`: TLS or nothing. The server's certificate is checked against
//!   `sslrootcert` when one is given (as libpq does), else only encrypted — a warning
//!   says so at start.
//! - `verify-ca`: TLS, and the certificate must chain to `sslrootcert`.
//! - `verify-full`: as `verify-ca`, and it must name the host of the URL.
//!
//! `prefer` and `allow` are refused: they fall back to cleartext when the server (or
//! whoever sits in between) declines TLS, which is exactly the attack TLS is for.
//! `sslrootcert=system` trusts the system's roots.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider,
};
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore,
    SignatureScheme,
};

use super::StoreError;

/// Postgres settings that are not in the URL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Overrides the URL's password (from `--db-password-file` / `EPOCHGATE_DB_PASSWORD`),
    /// so the URL need not hold one.
    pub password: Option<String>,
    /// The most connections the pool opens (besides the listener's).
    pub pool_size: usize,
    /// How long a request waits for a free connection, and for a new one to connect.
    pub pool_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            password: None,
            pool_size: 16,
            pool_timeout: Duration::from_secs(5),
        }
    }
}

/// `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A parsed store URL: the client configuration and the TLS connector.
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    pub ssl_mode: SslMode,
    /// `sslrootcert`, if given.
    pub root_cert: Option<String>,
}

/// The URL with its password (if any) replaced by `***`: what logs and errors show.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // userinfo ends at the last '@' before the path.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let redacted = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => userinfo.to_string(),
    };
    format!("{scheme}://{redacted}{}", &rest[at..])
}

fn bad(url: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::BadUrl {
        url: redact_url(url),
        reason: why.to_string(),
    }
}

/// Splits libpq's TLS parameters off `url` (tokio-postgres knows neither `verify-*`
/// nor `sslrootcert`) and parses the rest.
pub fn parse(url: &str, options: &PgOptions) -> Result<PgTarget, StoreError> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut ssl_mode = SslMode::Disable;
    let mut root_cert = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                ssl_mode = match value {
                    "disable" => SslMode::Disable,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    "prefer" | "allow" => {
                        return Err(bad(
                            url,
                            format!("sslmode={value} falls back to cleartext; use require, verify-ca or verify-full (or disable)"),
                        ))
                    }
                    other => {
                        return Err(bad(
                            url,
                            format!("unknown sslmode {other:?} (disable, require, verify-ca, verify-full)"),
                        ))
                    }
                }
            }
            "sslrootcert" => root_cert = Some(percent_decode(value)),
            _ => rest.push(pair),
        }
    }
    let plain = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config = tokio_postgres::Config::from_str(&plain).map_err(|e| bad(url, e))?;
    if let Some(password) = &options.password {
        config.password(password);
    }
    if config.get_application_name().is_none() {
        config.application_name("epochgate");
    }
    config.ssl_mode(match ssl_mode {
        SslMode::Disable => PgSslMode::Disable,
        _ => PgSslMode::Require,
    });
    if matches!(ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
        return Err(bad(
            url,
            format!(
                "sslmode={} needs sslrootcert=PATH (the CA's PEM file) or sslrootcert=system",
                if ssl_mode == SslMode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-full"
                }
            ),
        ));
    }
    let tls = client_config(ssl_mode, root_cert.as_deref()).map_err(|e| bad(url, e))?;
    Ok(PgTarget {
        config,
        tls: MakeRustlsConnect::new(tls),
        ssl_mode,
        root_cert,
    })
}

/// `%2F` → `/` in a query value (paths in URLs are often percent-encoded).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

fn roots(root_cert: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    if root_cert == "system" {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // A system root rustls cannot parse is skipped, as browsers do.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err("sslrootcert=system: no system root certificate found".into());
        }
        return Ok(roots);
    }
    let path = PathBuf::from(root_cert);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
        .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("sslrootcert {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "sslrootcert {} holds no certificate",
            path.display()
        ));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    }
    Ok(roots)
}

fn client_config(mode: SslMode, root_cert: Option<&str>) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, root_cert) {
        (SslMode::Disable, _) | (SslMode::Require, None) => Arc::new(EncryptOnly(provider())),
        (SslMode::VerifyFull, Some(root)) => webpki(root)?,
        (SslMode::Require | SslMode::VerifyCa, Some(root)) => Arc::new(ChainOnly(webpki(root)?)),
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err("verify-ca and verify-full need sslrootcert".into())
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn webpki(root_cert: &str) -> Result<Arc<WebPkiServerVerifier>, String> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots(root_cert)?), provider())
        .build()
        .map_err(|e| e.to_string())
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // webpki checks the name only once the chain is good.
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` without `sslrootcert` (libpq's meaning): encrypted, any certificate. The
/// handshake's signatures are still checked, so the server holds the key it presents.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/epochgate?sslmode=require"),
            "postgres://app:***@db:5432/epochgate?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://app:p@ss@db/x"),
            "postgres://app:***@db/x"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("postgres://db/x?u=a@b"), "postgres://db/x?u=a@b");
        assert_eq!(redact_url("epochgate.db"), "epochgate.db");
    }

    #[test]
    fn ssl_modes_parse_as_libpq_means_them() {
        let o = PgOptions::default();
        let t = parse("postgres://u@h/db", &o).unwrap();
        assert_eq!(t.ssl_mode, SslMode::Disable);
        assert_eq!(t.config.get_ssl_mode(), PgSslMode::Disable);
        let t = parse("postgres://u@h/db?sslmode=require&connect_timeout=3", &o).unwrap();
        assert_eq!(t.ssl_mode, SslMode::Require);
        assert_eq!(t.config.get_ssl_mode(), PgSslMode::Require);
        assert_eq!(
            t.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        for refused in ["prefer", "allow", "nonsense"] {
            let err = parse(&format!("postgres://u:pw@h/db?sslmode={refused}"), &o)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(refused), "{err}");
            assert!(!err.contains("pw@"), "redacted: {err}");
        }
        let err = parse("postgres://u@h/db?sslmode=verify-full", &o)
            .err()
            .unwrap();
        assert!(err.to_string().contains("sslrootcert"), "{err}");
        let err = parse(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            &o,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_password_from_outside_the_url_wins() {
        let o = PgOptions {
            password: Some("from-file".into()),
            ..PgOptions::default()
        };
        let t = parse("postgres://u:in-url@h/db", &o).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"from-file"[..]));
        assert_eq!(percent_decode("%2Ftmp%2Fca.pem"), "/tmp/ca.pem");
    }
}
