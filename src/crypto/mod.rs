//! The keyring: the only module that touches key material.
//!
//! A 32-byte master key (file or environment, never source, never the database) wraps random data
//! keys that are stored, wrapped, in the database. Fields are sealed with XChaCha20-Poly1305; the
//! associated data binds each ciphertext to its table, column and row, so a ciphertext copied to
//! another row fails to open. Every ciphertext starts with a version byte and the id of its key.
//!
//! Purposes: `enc` keys seal fields (rotated by `keys rotate`); the `mac` key chains the journal
//! and the audit log; the `bidx` key computes blind indexes for equality lookups on encrypted
//! values. The MAC and blind-index keys are not rotated: rotating them would mean rewriting the
//! very chains that prove the history was not rewritten (see docs/architecture.md).

pub mod master;
pub mod rotation;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

pub use master::MasterKey;

use crate::store::{Db, StoreError, keys as key_store};

type HmacSha256 = Hmac<Sha256>;

const CIPHERTEXT_VERSION: u8 = 1;
const NONCE_BYTES: usize = 24;
const HEADER_BYTES: usize = 1 + 4 + NONCE_BYTES;
const TAG_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("ciphertext is malformed")]
    Malformed,
    #[error("ciphertext names key {0}, which the keyring does not hold")]
    UnknownKey(u32),
    #[error("ciphertext does not open (wrong key, or moved from another row, or tampered with)")]
    Open,
    #[error(
        "the master key cannot open the stored data keys (wrong ALPHABANK_MASTER_KEY or key file?)"
    )]
    WrongMasterKey,
    #[error("no {0} key is stored")]
    MissingKey(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("master key: {0}")]
    MasterKey(String),
}

/// What a ciphertext is bound to: table, column and row.
pub struct Aad {
    bytes: Vec<u8>,
}

impl Aad {
    pub fn new(table: &str, column: &str, row: impl fmt::Display) -> Self {
        Aad {
            bytes: format!("alphabank.v1|{table}|{column}|{row}").into_bytes(),
        }
    }
}

/// Key purposes as stored in `data_keys.purpose`.
pub const PURPOSE_ENCRYPTION: &str = "enc";
pub const PURPOSE_MAC: &str = "mac";
pub const PURPOSE_BLIND_INDEX: &str = "bidx";
/// Key states as stored in `data_keys.state`.
pub const STATE_ACTIVE: &str = "active";
pub const STATE_RETIRING: &str = "retiring";
pub const STATE_RETIRED: &str = "retired";

/// How often a running server re-reads the stored data keys (after `keys rotate` in another
/// process). `keys rotate` announces a new key and waits this long (plus
/// [`KEYRING_ANNOUNCE_MARGIN`]) before sealing under it, so every serving instance can open it.
pub const KEYRING_REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// Slack added to [`KEYRING_REFRESH_INTERVAL`] for a refresh that runs late or slowly.
pub const KEYRING_ANNOUNCE_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

struct Inner {
    active_key_id: u32,
    ciphers: HashMap<u32, XChaCha20Poly1305>,
    mac_key: Zeroizing<Vec<u8>>,
    blind_index_key: Zeroizing<Vec<u8>>,
}

/// Cheap to clone; shared by every request.
#[derive(Clone)]
pub struct Keyring {
    master: Arc<MasterKey>,
    inner: Arc<RwLock<Arc<Inner>>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keyring(<keys redacted>)")
    }
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A random positive 63-bit row id. Ids are chosen before insert so that the associated data
/// of a sealed field can name its row.
pub fn random_row_id() -> i64 {
    let value = i64::from_le_bytes(random_bytes::<8>()) & i64::MAX;
    value.max(2) // 1 is reserved for the bank's cash account
}

impl Keyring {
    /// Opens the stored data keys with the master key, creating the first keys on a new database.
    /// While a master-key rotation is pending, each key is opened from whichever of its wrappings
    /// this master key opens (`data_keys.wrapped`, else its row in `data_key_wraps`).
    pub async fn load(db: &Db, master: MasterKey) -> Result<Self, CryptoError> {
        let master = Arc::new(master);
        let master_id = master.id();
        let mut stored = key_store::list_for_master(db, &master_id).await?;
        if stored.is_empty() {
            // Atomic: of several instances starting together, one creates the keys, all load them.
            key_store::create_initial(
                db,
                &[PURPOSE_ENCRYPTION, PURPOSE_MAC, PURPOSE_BLIND_INDEX],
                |id, purpose| {
                    let key = Zeroizing::new(random_bytes::<32>());
                    master.wrap(id, purpose, &key)
                },
            )
            .await?;
            stored = key_store::list_for_master(db, &master_id).await?;
        }
        let inner = Self::open_all(&master, &stored)?;
        Ok(Keyring {
            master,
            inner: Arc::new(RwLock::new(Arc::new(inner))),
        })
    }

    fn open_all(master: &MasterKey, stored: &[key_store::StoredKey]) -> Result<Inner, CryptoError> {
        let mut ciphers = HashMap::new();
        let mut active_key_id = None;
        let mut mac_key = None;
        let mut blind_index_key = None;
        for key in stored {
            let plain = master.unwrap_stored(key)?;
            match key.purpose.as_str() {
                PURPOSE_ENCRYPTION => {
                    let id = u32::try_from(key.id).map_err(|_| CryptoError::Malformed)?;
                    let cipher = XChaCha20Poly1305::new_from_slice(&plain[..])
                        .map_err(|_| CryptoError::Malformed)?;
                    ciphers.insert(id, cipher);
                    if key.state == STATE_ACTIVE {
                        active_key_id = Some(id);
                    }
                }
                PURPOSE_MAC => mac_key = Some(Zeroizing::new(plain.to_vec())),
                PURPOSE_BLIND_INDEX => blind_index_key = Some(Zeroizing::new(plain.to_vec())),
                _ => {}
            }
        }
        Ok(Inner {
            active_key_id: active_key_id.ok_or(CryptoError::MissingKey("active encryption"))?,
            ciphers,
            mac_key: mac_key.ok_or(CryptoError::MissingKey("MAC"))?,
            blind_index_key: blind_index_key.ok_or(CryptoError::MissingKey("blind index"))?,
        })
    }

    /// Re-reads the stored keys (after `keys rotate` in another process). On any error the keys
    /// in memory stay as they were: e.g. after `keys rotate-master --finish` an instance still
    /// running with the old master key keeps serving with the keys it holds (and the caller logs
    /// the error) until it is restarted with the new key.
    pub async fn refresh(&self, db: &Db) -> Result<(), CryptoError> {
        let stored = key_store::list_for_master(db, &self.master.id()).await?;
        let inner = Self::open_all(&self.master, &stored)?;
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(inner);
        Ok(())
    }

    fn current(&self) -> Arc<Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn active_key_id(&self) -> u32 {
        self.current().active_key_id
    }

    pub(crate) fn master(&self) -> &MasterKey {
        &self.master
    }

    /// Seals `plaintext` under the active data key, bound to `aad`.
    pub fn seal(&self, aad: &Aad, plaintext: &[u8]) -> Vec<u8> {
        let inner = self.current();
        let nonce_bytes = random_bytes::<NONCE_BYTES>();
        let mut out = Vec::with_capacity(HEADER_BYTES + plaintext.len() + TAG_BYTES);
        out.push(CIPHERTEXT_VERSION);
        out.extend_from_slice(&inner.active_key_id.to_be_bytes());
        out.extend_from_slice(&nonce_bytes);
        if let Some(cipher) = inner.ciphers.get(&inner.active_key_id) {
            // Encryption with a valid key and in-memory buffers cannot fail.
            if let Ok(ct) = cipher.encrypt(
                XNonce::from_slice(&nonce_bytes),
                Payload {
                    msg: plaintext,
                    aad: &aad.bytes,
                },
            ) {
                out.extend_from_slice(&ct);
            }
        }
        out
    }

    /// The key id a ciphertext was sealed under.
    pub fn key_id_of(ciphertext: &[u8]) -> Result<u32, CryptoError> {
        match ciphertext {
            [CIPHERTEXT_VERSION, a, b, c, d, ..]
                if ciphertext.len() >= HEADER_BYTES + TAG_BYTES =>
            {
                Ok(u32::from_be_bytes([*a, *b, *c, *d]))
            }
            _ => Err(CryptoError::Malformed),
        }
    }

    pub fn open(&self, aad: &Aad, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let key_id = Self::key_id_of(ciphertext)?;
        let inner = self.current();
        let cipher = inner
            .ciphers
            .get(&key_id)
            .ok_or(CryptoError::UnknownKey(key_id))?;
        let nonce = ciphertext
            .get(5..HEADER_BYTES)
            .ok_or(CryptoError::Malformed)?;
        let body = ciphertext
            .get(HEADER_BYTES..)
            .ok_or(CryptoError::Malformed)?;
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &aad.bytes,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Open)
    }

    pub fn seal_i64(&self, aad: &Aad, value: i64) -> Vec<u8> {
        self.seal(aad, &value.to_be_bytes())
    }

    pub fn open_i64(&self, aad: &Aad, ciphertext: &[u8]) -> Result<i64, CryptoError> {
        let plain = self.open(aad, ciphertext)?;
        let bytes: [u8; 8] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Malformed)?;
        Ok(i64::from_be_bytes(bytes))
    }

    pub fn seal_str(&self, aad: &Aad, value: &str) -> Vec<u8> {
        self.seal(aad, value.as_bytes())
    }

    pub fn open_string(&self, aad: &Aad, ciphertext: &[u8]) -> Result<String, CryptoError> {
        let plain = self.open(aad, ciphertext)?;
        String::from_utf8(plain.to_vec()).map_err(|_| CryptoError::Malformed)
    }

    /// HMAC-SHA256 blind index of `value` within `domain` (e.g. "email"), for equality lookups.
    pub fn blind_index(&self, domain: &str, value: &str) -> Vec<u8> {
        let inner = self.current();
        mac_parts(
            &inner.blind_index_key,
            &[domain.as_bytes(), value.as_bytes()],
        )
        .to_vec()
    }

    /// HMAC-SHA256 over length-prefixed parts (unambiguous framing) with the chain MAC key.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let inner = self.current();
        mac_parts(&inner.mac_key, parts)
    }

    /// Constant-time comparison of a stored MAC with the MAC of `parts`.
    pub fn verify_mac(&self, parts: &[&[u8]], expected: &[u8]) -> bool {
        let actual = self.mac(parts);
        constant_time_eq(&actual, expected)
    }
}

fn mac_parts(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let Ok(mut mac) = <HmacSha256 as Mac>::new_from_slice(key) else {
        return [0u8; 32]; // HMAC accepts keys of any length; unreachable
    };
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time equality for secrets and MACs.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// SHA-256, for hashing tokens whose preimage is already high-entropy (session ids).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    Sha256::digest(data).into()
}
