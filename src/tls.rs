//! TLS: the operator's PEM files, or a self-signed certificate for `localhost`/`127.0.0.1`
//! generated on first start (rcgen). rustls with the *ring* provider: TLS 1.2 and 1.3 only, and
//! only AEAD cipher suites with forward secrecy (rustls offers nothing weaker).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Io(String),
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Validity of the generated certificate (the CA/Browser Forum's maximum for public certificates);
/// delete `tls-cert.pem` and `tls-key.pem` to have a new one generated at the next start.
pub const GENERATED_CERT_VALIDITY_DAYS: i64 = 397;

pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub generated: bool,
}

/// The configured files, or the generated pair under the data dir (created on first use).
pub fn ensure_files(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
) -> Result<TlsFiles, TlsError> {
    if let (Some(cert), Some(key)) = (cert, key) {
        return Ok(TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            generated: false,
        });
    }
    let cert = data_dir.join("tls-cert.pem");
    let key = data_dir.join("tls-key.pem");
    if cert.is_file() && key.is_file() {
        return Ok(TlsFiles {
            cert,
            key,
            generated: false,
        });
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| TlsError::Io(format!("cannot create {}: {e}", data_dir.display())))?;
    let key_pair = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(|e| TlsError::Generate(e.to_string()))?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(GENERATED_CERT_VALIDITY_DAYS);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "AlphaBank (self-signed, localhost)",
    );
    let certificate = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let generated = rcgen::CertifiedKey {
        cert: certificate,
        signing_key: key_pair,
    };
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.cert.pem())
        .map_err(|e| TlsError::Io(format!("cannot write {}: {e}", cert.display())))?;
    Ok(TlsFiles {
        cert,
        key,
        generated: true,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| TlsError::Io(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(bytes)
        .map_err(|e| TlsError::Io(format!("cannot write {}: {e}", path.display())))
}

/// SHA-256 fingerprint of the first certificate in a PEM file, as `AB:CD:…`.
pub fn fingerprint(cert_path: &Path) -> Result<String, TlsError> {
    let der = CertificateDer::from_pem_file(cert_path).map_err(|e| {
        TlsError::Io(format!(
            "cannot read certificate {}: {e}",
            cert_path.display()
        ))
    })?;
    let digest = crate::crypto::sha256(&der);
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// A rustls server configuration: TLS 1.2+ with the *ring* provider, ALPN h2 and http/1.1.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| TlsError::Config(format!("cannot read {}: {e}", files.cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            TlsError::Config(format!("bad certificate in {}: {e}", files.cert.display()))
        })?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        TlsError::Config(format!("bad private key in {}: {e}", files.key.display()))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
