//! The master key: 32 random bytes, base64, from `ALPHABANK_MASTER_KEY` or the key file (mode
//! 0600). It only wraps data keys; it never touches a field directly.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use super::{CryptoError, random_bytes};

pub struct MasterKey(Zeroizing<[u8; 32]>);

/// Where the master key came from, for the start-up message (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    Environment,
    File(std::path::PathBuf),
    Generated(std::path::PathBuf),
}

impl MasterKey {
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let bytes = Zeroizing::new(
            BASE64
                .decode(text.trim())
                .map_err(|_| CryptoError::MasterKey("is not valid base64".into()))?,
        );
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            CryptoError::MasterKey(format!("must be 32 bytes, found {}", bytes.len()))
        })?;
        Ok(MasterKey(Zeroizing::new(key)))
    }

    pub fn generate() -> Self {
        MasterKey(Zeroizing::new(random_bytes::<32>()))
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE64.encode(*self.0))
    }

    /// Environment first, then the file; a missing file is created only when `may_create`
    /// (a database that holds no data keys yet), so a lost key file never silently becomes a new
    /// key that cannot open the existing data.
    pub fn load(
        from_env: Option<&str>,
        file: &Path,
        may_create: bool,
    ) -> Result<(Self, MasterKeySource), CryptoError> {
        if let Some(text) = from_env {
            return Ok((Self::from_base64(text)?, MasterKeySource::Environment));
        }
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let key = Self::from_base64(&text)
                    .map_err(|e| CryptoError::MasterKey(format!("{}: {e}", file.display())))?;
                if let Ok(meta) = std::fs::metadata(file)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    tracing::warn!(path = %file.display(), "master key file is readable by group or others; chmod 600 it");
                }
                Ok((key, MasterKeySource::File(file.to_path_buf())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_create => {
                let key = Self::generate();
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        CryptoError::MasterKey(format!("cannot create {}: {e}", parent.display()))
                    })?;
                }
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(file)
                    .map_err(|e| {
                        CryptoError::MasterKey(format!("cannot create {}: {e}", file.display()))
                    })?;
                out.write_all(key.to_base64().as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
                    .and_then(|()| out.sync_all())
                    .map_err(|e| {
                        CryptoError::MasterKey(format!("cannot write {}: {e}", file.display()))
                    })?;
                Ok((key, MasterKeySource::Generated(file.to_path_buf())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(CryptoError::MasterKey(format!(
                    "{} is missing but the database holds data keys; restore the key file or set ALPHABANK_MASTER_KEY",
                    file.display()
                )))
            }
            Err(e) => Err(CryptoError::MasterKey(format!(
                "cannot read {}: {e}",
                file.display()
            ))),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.0).into())
    }

    fn aad(key_id: i64, purpose: &str) -> Vec<u8> {
        format!("alphabank.v1|data_keys|{purpose}|{key_id}").into_bytes()
    }

    /// Wraps a data key: nonce (24) || ciphertext+tag, bound to the key's id and purpose.
    pub(crate) fn wrap(&self, key_id: i64, purpose: &str, key: &[u8; 32]) -> Vec<u8> {
        let nonce = random_bytes::<24>();
        let aad = Self::aad(key_id, purpose);
        let mut out = nonce.to_vec();
        if let Ok(ct) = self.cipher().encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: key,
                aad: &aad,
            },
        ) {
            out.extend_from_slice(&ct);
        }
        out
    }

    pub(crate) fn unwrap(
        &self,
        key_id: i64,
        purpose: &str,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let nonce = wrapped.get(..24).ok_or(CryptoError::WrongMasterKey)?;
        let body = wrapped.get(24..).ok_or(CryptoError::WrongMasterKey)?;
        let aad = Self::aad(key_id, purpose);
        let plain = Zeroizing::new(
            self.cipher()
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: body,
                        aad: &aad,
                    },
                )
                .map_err(|_| CryptoError::WrongMasterKey)?,
        );
        let key: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::WrongMasterKey)?;
        Ok(Zeroizing::new(key))
    }
}
