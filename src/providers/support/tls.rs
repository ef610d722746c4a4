//! The one TLS configuration of the crate, used by PostgreSQL, Redis and the HTTP backends
//! alike: rustls (pure Rust, no system OpenSSL) with an explicitly chosen crypto provider
//! (`ring`) — never `ClientConfig::builder()`, which panics when an application enables two
//! providers — verifying against the system's root certificates, optionally plus a CA file, or,
//! only when asked by its loud name, not verifying at all.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Error, Result};

/// How a provider checks the server's certificate when it talks TLS (which the connection URL
/// decides: `rediss://`, `https://`, PostgreSQL's `sslmode`).
///
/// ```
/// use leader_election::Tls;
///
/// let tls = Tls::VerifyWithCa("/etc/ssl/private-ca.pem".into());
/// assert_ne!(tls, Tls::default()); // the default verifies against the system's roots
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tls {
    /// Verify the certificate chain and host name against the system's root certificates.
    #[default]
    Verify,
    /// Verify as [`Tls::Verify`], trusting the CA certificates in this PEM file too.
    VerifyWithCa(PathBuf),
    /// Encrypt, but accept any certificate for any host name. Protects against passive
    /// eavesdropping only: anyone who can intercept the connection can read and change it,
    /// credentials included. For test servers with throw-away certificates.
    DangerAcceptInvalidCerts,
}

impl Tls {
    /// Reads the TLS options of a connection URL: `ca_file=PATH` trusts a CA file,
    /// `tls=danger-accept-invalid-certs` turns verification off, `tls=verify` is the default.
    #[cfg_attr(not(test), allow(dead_code))] // for providers configured by URL parameters
    pub(crate) fn from_params(tls: Option<&str>, ca_file: Option<&str>) -> Result<Tls> {
        match (tls, ca_file) {
            (None | Some("verify"), None) => Ok(Tls::Verify),
            (None | Some("verify"), Some(path)) => Ok(Tls::VerifyWithCa(path.into())),
            (Some("danger-accept-invalid-certs"), None) => Ok(Tls::DangerAcceptInvalidCerts),
            (Some("danger-accept-invalid-certs"), Some(_)) => Err(Error::config(
                "tls",
                "danger-accept-invalid-certs verifies nothing, so ca_file cannot go with it",
            )),
            (Some(other), _) => Err(Error::config(
                "tls",
                format!("unknown mode {other:?}; expected verify or danger-accept-invalid-certs"),
            )),
        }
    }

    /// The CA file, if any.
    pub(crate) fn ca_file(&self) -> Option<&std::path::Path> {
        match self {
            Tls::VerifyWithCa(path) => Some(path),
            _ => None,
        }
    }

    /// The certificates in the CA file (none without one). Errors name the file, never its
    /// contents.
    pub(crate) fn extra_roots(&self) -> Result<Vec<CertificateDer<'static>>> {
        let Some(path) = self.ca_file() else {
            return Ok(Vec::new());
        };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| {
                Error::config(
                    "ca_file",
                    format!("cannot read CA certificates from {}: {e}", path.display()),
                )
            })?;
        if certs.is_empty() {
            return Err(Error::config(
                "ca_file",
                format!("no PEM certificate in {}", path.display()),
            ));
        }
        Ok(certs)
    }

    /// The system's root certificates plus the CA file's.
    #[allow(dead_code)] // for the HTTP transport
    pub(crate) fn roots(&self) -> Result<Vec<CertificateDer<'static>>> {
        let mut roots = rustls_native_certs::load_native_certs().certs;
        roots.extend(self.extra_roots()?);
        Ok(roots)
    }

    /// A rustls client configuration for this mode, on the `ring` crypto provider.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn client_config(&self) -> Result<ClientConfig> {
        let provider = crypto_provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config("tls", format!("rustls: {e}")))?;
        Ok(match self {
            Tls::DangerAcceptInvalidCerts => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerifier(provider)))
                .with_no_client_auth(),
            Tls::Verify | Tls::VerifyWithCa(_) => {
                let mut store = RootCertStore::empty();
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = store.add(cert);
                }
                for cert in self.extra_roots()? {
                    store.add(cert).map_err(|e| {
                        Error::config("ca_file", format!("bad CA certificate: {e}"))
                    })?;
                }
                builder.with_root_certificates(store).with_no_client_auth()
            }
        })
    }
}

/// For client libraries that build their TLS configuration from rustls's process-wide default
/// provider (the redis crate does, and panics when none is installed and the application has
/// more than one compiled in): installs `ring` as that default if the application has not
/// installed one. An application's own choice is never replaced.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn ensure_process_default_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err: another thread installed one meanwhile, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The crypto provider every TLS connection of this crate uses, whatever the application has
/// installed as the process default.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any certificate but still checks the handshake signatures.
#[derive(Debug)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
struct NoVerifier(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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
    fn url_params() {
        assert_eq!(Tls::from_params(None, None).unwrap(), Tls::Verify);
        assert_eq!(
            Tls::from_params(Some("verify"), Some("/x.pem")).unwrap(),
            Tls::VerifyWithCa("/x.pem".into())
        );
        assert_eq!(
            Tls::from_params(Some("danger-accept-invalid-certs"), None).unwrap(),
            Tls::DangerAcceptInvalidCerts
        );
        assert!(Tls::from_params(Some("danger-accept-invalid-certs"), Some("/x")).is_err());
        let e = Tls::from_params(Some("off"), None).unwrap_err().to_string();
        assert!(e.contains("tls") && e.contains("off"), "{e}");
    }

    #[test]
    fn configs_build_without_a_process_default_provider() {
        Tls::Verify.client_config().unwrap();
        Tls::DangerAcceptInvalidCerts.client_config().unwrap();
        let e = Tls::VerifyWithCa("/nonexistent/ca.pem".into())
            .client_config()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ca_file") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
    }
}
