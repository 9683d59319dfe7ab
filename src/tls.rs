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

fn load_pair(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "Cannot read the certificate file `{}` (tls.cert_file) as PEM",
                cert_file.display()
            )
        })?;
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
