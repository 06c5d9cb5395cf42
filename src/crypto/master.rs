//! The master key: 32 random bytes, base64, from `ALPHABANK_MASTER_KEY` or the key file (mode
//! 0600). It only wraps data keys; it never touches a field directly.
//!
//! A master key is named by its id ([`MasterKey::id`]): the first 16 bytes of
//! HMAC-SHA256(master, "alphabank master key id v1"). The id reveals nothing about the key and is
//! stored with each wrapping made during a master-key rotation (`data_key_wraps`).

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{CryptoError, random_bytes};
use crate::store::keys::StoredKey;

/// Length of a master key id.
pub const MASTER_ID_BYTES: usize = 16;
const MASTER_ID_LABEL: &[u8] = b"alphabank master key id v1";

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
        // Wiped from memory when dropped, like the key itself.
        match std::fs::read_to_string(file).map(Zeroizing::new) {
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
                key.write_new_file(file)?;
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

    /// Writes the key (base64 and a newline) to a new file of mode 0600; never overwrites.
    fn write_new_file(&self, file: &Path) -> Result<(), CryptoError> {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .map_err(|e| {
                CryptoError::MasterKey(format!("cannot create {}: {e}", file.display()))
            })?;
        out.write_all(self.to_base64().as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.sync_all())
            .map_err(|e| CryptoError::MasterKey(format!("cannot write {}: {e}", file.display())))
    }

    /// The new key of a master-key rotation (`keys rotate-master --new-key-file PATH`): read from
    /// `file` if it exists — refused unless it is a regular file that neither group nor others
    /// can read or write — else generated and written there (mode 0600, never overwriting).
    /// Returns the key and whether it was generated.
    pub fn load_or_create_new_key_file(file: &Path) -> Result<(Self, bool), CryptoError> {
        match std::fs::File::open(file) {
            Ok(mut opened) => {
                // The checks apply to the file that was opened (no race with a rename).
                let meta = opened.metadata().map_err(|e| {
                    CryptoError::MasterKey(format!("cannot read {}: {e}", file.display()))
                })?;
                if !meta.is_file() {
                    return Err(CryptoError::MasterKey(format!(
                        "{} is not a regular file",
                        file.display()
                    )));
                }
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(CryptoError::MasterKey(format!(
                        "{} is accessible to group or others (mode {mode:04o}); chmod 600 it first",
                        file.display()
                    )));
                }
                let mut text = Zeroizing::new(String::new());
                Read::by_ref(&mut opened)
                    .take(1024)
                    .read_to_string(&mut text)
                    .map_err(|e| {
                        CryptoError::MasterKey(format!("cannot read {}: {e}", file.display()))
                    })?;
                let key = Self::from_base64(&text)
                    .map_err(|e| CryptoError::MasterKey(format!("{}: {e}", file.display())))?;
                Ok((key, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                key.write_new_file(file)?;
                Ok((key, true))
            }
            Err(e) => Err(CryptoError::MasterKey(format!(
                "cannot read {}: {e}",
                file.display()
            ))),
        }
    }

    /// The key's non-secret id: HMAC-SHA256(master, "alphabank master key id v1"), first 16 bytes.
    pub fn id(&self) -> [u8; MASTER_ID_BYTES] {
        let mut id = [0u8; MASTER_ID_BYTES];
        if let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.0[..]) {
            mac.update(MASTER_ID_LABEL);
            let full = mac.finalize().into_bytes();
            for (out, byte) in id.iter_mut().zip(full.iter()) {
                *out = *byte;
            }
        }
        id
    }

    /// The id in hex, for messages and the audit log.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id())
    }

    /// Whether `other` is the same key (constant time).
    pub fn same_key(&self, other: &MasterKey) -> bool {
        super::constant_time_eq(&self.0[..], &other.0[..])
    }

    /// Opens a stored data key: its `data_keys.wrapped` if this key opens that, else its
    /// wrapping under this key from a pending master-key rotation.
    pub(crate) fn unwrap_stored(
        &self,
        key: &StoredKey,
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        match self.unwrap(key.id, &key.purpose, &key.wrapped) {
            Ok(plain) => Ok(plain),
            Err(error) => match key.pending_wrap.as_deref() {
                Some(wrapped) => self.unwrap(key.id, &key.purpose, wrapped),
                None => Err(error),
            },
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
