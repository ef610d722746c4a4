//! TLS for the PostgreSQL provider: rustls (pure Rust, no system OpenSSL), with the system's
//! root certificates plus an optional CA file, or — explicitly — no verification.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// How the PostgreSQL provider checks the server's certificate when the connection string asks
/// for TLS (`sslmode=prefer` or `sslmode=require`). With `sslmode=disable` no TLS is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PostgresTls {
    /// Verify the certificate chain and host name against the system's root certificates.
    #[default]
    Verify,
    /// Verify as [`PostgresTls::Verify`], trusting the CA certificates in this PEM file too.
    VerifyWithCa(PathBuf),
    /// Encrypt, but accept any certificate — libpq's `sslmode=require` behaviour. Protects
    /// against passive eavesdropping only; use it for servers whose CA you cannot obtain.
    NoVerify,
}

pub(crate) fn connector(tls: &PostgresTls) -> Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config("tls", format!("rustls: {e}")))?;
    let config = match tls {
        PostgresTls::NoVerify => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerifier(provider)))
            .with_no_client_auth(),
        PostgresTls::Verify | PostgresTls::VerifyWithCa(_) => {
            let mut roots = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            if let PostgresTls::VerifyWithCa(path) = tls {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| {
                        Error::config(
                            "tls",
                            format!("cannot read CA certificates from {}: {e}", path.display()),
                        )
                    })?;
                if certs.is_empty() {
                    return Err(Error::config(
                        "tls",
                        format!("no PEM certificate in {}", path.display()),
                    ));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        Error::config(
                            "tls",
                            format!("bad CA certificate in {}: {e}", path.display()),
                        )
                    })?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Accepts any certificate but still checks the handshake signatures.
#[derive(Debug)]
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
