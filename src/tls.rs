//! HTTPS on the listener (SPEC §14): the certificate chain and key from PEM
//! files, TLS 1.2 and 1.3 only (rustls), and a reload (on SIGHUP, by
//! `serve`) that new connections see while open ones keep what they
//! negotiated. A pair that does not load is refused with a sentence naming
//! the file: at start-up that stops the service, at a reload the previous
//! pair stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, bail};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Installs the process's one rustls crypto provider (ring). Each library
/// that uses rustls asks for the default; with none installed, or two
/// providers in the build, the first handshake would panic.
pub fn install_provider() {
    // Err: already installed (by an earlier call), which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The certificate and key files, and the pair loaded from them last.
#[derive(Debug)]
pub struct Reloadable {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Reloadable {
    pub fn load(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<Reloadable>> {
        install_provider();
        let pair = load_pair(cert_file, key_file)?;
        Ok(Arc::new(Reloadable {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(pair),
        }))
    }

    /// Reads the files again; on any error the previous pair stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let pair = load_pair(&self.cert_file, &self.key_file)?;
        *self
            .current
            .write()
            .expect("never poisoned: no panic holds it") = pair;
        Ok(())
    }

    /// TLS 1.3 and 1.2 only, no client certificates, this pair for every
    /// handshake.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        rustls::ServerConfig::builder_with_protocol_versions(&[
            &rustls::version::TLS13,
            &rustls::version::TLS12,
        ])
        .with_no_client_auth()
        .with_cert_resolver(self.clone())
    }
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .expect("never poisoned: no panic holds it")
                .clone(),
        )
    }
}

/// The certificates of a PEM file that `setting` names.
fn certificates(file: &Path, setting: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("Cannot read `{}` ({setting}) as PEM", file.display()))
}

fn load_pair(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs = certificates(cert_file, "tls.cert_file")?;
    if certs.is_empty() {
        bail!(
            "The certificate file `{}` (tls.cert_file) holds no PEM certificate.",
            cert_file.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key_file).with_context(|| {
        format!(
            "Cannot read a private key from `{}` (tls.key_file) as PEM",
            key_file.display()
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let pair = CertifiedKey::from_der(certs, key, &provider).with_context(|| {
        format!(
            "The key in `{}` (tls.key_file) is not usable with the certificate in `{}` (tls.cert_file)",
            key_file.display(),
            cert_file.display()
        )
    })?;
    Ok(Arc::new(pair))
}

/// The TLS client of the migrations' tokio-postgres connection for a URL's
/// `sslmode`, `sslrootcert`, `sslcert` and `sslkey`, with libpq's meaning
/// (tokio-postgres's own connectors ignore `sslmode`): None for
/// `disable`. sqlx reads the same parameters itself for every other
/// connection.
pub fn postgres_client(ssl: &crate::config::Ssl) -> anyhow::Result<Option<rustls::ClientConfig>> {
    use crate::config::SslMode;
    install_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = || -> anyhow::Result<Arc<rustls::RootCertStore>> {
        let mut roots = rustls::RootCertStore::empty();
        match &ssl.root_cert {
            Some(file) => {
                roots.add_parsable_certificates(certificates(file, "sslrootcert")?);
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        Ok(Arc::new(roots))
    };
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match ssl.mode {
        SslMode::Disable => return Ok(None),
        // libpq: `require` with a root certificate checks the chain.
        SslMode::Allow | SslMode::Prefer | SslMode::Require if ssl.root_cert.is_none() => {
            Arc::new(Libpq {
                chain: None,
                provider: provider.clone(),
            })
        }
        SslMode::VerifyFull => {
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots()?, provider.clone())
                .build()?
        }
        _ => Arc::new(Libpq {
            chain: Some(
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    roots()?,
                    provider.clone(),
                )
                .build()?,
            ),
            provider: provider.clone(),
        }),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&ssl.client_cert, &ssl.client_key) {
        (Some(cert), Some(key)) => {
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("Cannot read `sslkey` `{}` as PEM", key.display()))?;
            builder.with_client_auth_cert(certificates(cert, "sslcert")?, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(config))
}

/// A sentence for what rustls said of a database server's certificate,
/// when it said something of it (both sqlx's and tokio-postgres's errors
/// carry rustls's words).
pub fn certificate_trouble(said: &str) -> Option<&'static str> {
    // rustls's errors read as their Debug names or their Display sentences,
    // depending on the variant and on who formats them.
    let said = said.to_ascii_lowercase();
    let says = |words: &[&str]| words.iter().any(|w| said.contains(w));
    Some(
        if says(&["unknownissuer", "unknown issuer", "badsignature"]) {
            "the server's certificate is not signed by an authority of `sslrootcert` (or the public roots without it)"
        } else if says(&["notvalidforname", "not valid for name"]) {
            "the server's certificate does not name the host connected to (sslmode=verify-full checks it; verify-ca does not)"
        } else if says(&["expired"]) {
            "the server's certificate has expired"
        } else if says(&["notvalidyet", "not valid yet"]) {
            "the server's certificate is not valid yet (check the clocks)"
        } else if says(&["revoked"]) {
            "the server's certificate is revoked"
        } else if says(&["unsupportedcertversion", "badencoding"]) {
            "a certificate is not a usable X.509 v3 certificate"
        } else {
            return None;
        },
    )
}

/// libpq's checks below `verify-full`, which rustls does not have: for
/// `prefer` and `require` without `sslrootcert` (no `chain`), encryption
/// with the server's certificate unchecked; for `verify-ca`, the chain to a
/// trusted root but not the host name. The handshake's signatures are
/// checked in both.
#[derive(Debug)]
struct Libpq {
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

impl ServerCertVerifier for Libpq {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::certificate_trouble;

    #[test]
    fn rustls_words_become_sentences_in_either_form() {
        for (said, sentence) in [
            (
                "invalid peer certificate: UnknownIssuer",
                "not signed by an authority",
            ),
            (
                "invalid peer certificate: certificate not valid for name \"h\"; certificate is only valid for ...",
                "does not name the host",
            ),
            (
                "invalid peer certificate: NotValidForName",
                "does not name the host",
            ),
            (
                "invalid peer certificate: certificate expired: verification time 1 (UNIX), but certificate is not valid after 0 (1 seconds ago)",
                "has expired",
            ),
        ] {
            assert!(
                certificate_trouble(said).unwrap().contains(sentence),
                "{said}"
            );
        }
        assert_eq!(certificate_trouble("connection refused"), None);
    }
}
