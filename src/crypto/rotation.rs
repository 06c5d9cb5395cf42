//! `alphabank keys rotate`: a new data key becomes active and every sealed field is re-sealed
//! under it. Old keys stay readable (state `retired`), so backups taken before the rotation still
//! open and a server that has not yet refreshed its keyring keeps working.
//!
//! Safe while other instances serve: a running instance learns about keys only at its periodic
//! keyring refresh ([`KEYRING_REFRESH_INTERVAL`]), and `Keyring::open` cannot ask the database.
//! So the rotation runs in three steps:
//! 1. announce: the new key is stored in state `retired` (loaded by every refresh, never used to
//!    seal), then the rotation waits one refresh interval plus [`KEYRING_ANNOUNCE_MARGIN`];
//! 2. promote: in one transaction the old active key becomes `retiring` and the new one `active`;
//! 3. re-seal every field, then `retiring` keys become `retired`.
//!
//! Resumable: a `retiring` key means step 3 was interrupted (carry on re-sealing); an announced
//! key (`retired`, id above the active key's) means step 1 or 2 was interrupted (wait again, then
//! promote it). Neither creates another key.
//!
//! Refused while a master-key rotation is pending (below): the new data key could only be wrapped
//! under one of the two master keys.
//!
//! # Master-key rotation (`alphabank keys rotate-master`)
//!
//! Two phases, safe while instances serve on one database:
//! 1. [`start_master_rotation`], run with the current master key configured: in one transaction,
//!    every data key gets a second wrapping under the new master key (`data_key_wraps`, named by
//!    the new key's id). Instances with either key can now load the keyring (see
//!    `MasterKey::unwrap_stored`), so operators restart them one at a time with the new key.
//! 2. [`finish_master_rotation`], run with the new master key configured: in one transaction,
//!    `data_keys.wrapped` becomes the new wrapping and `data_key_wraps` is emptied; the old master
//!    key then opens nothing.

use std::path::Path;
use std::time::Duration;

use zeroize::Zeroizing;

use super::{
    Aad, CryptoError, KEYRING_ANNOUNCE_MARGIN, KEYRING_REFRESH_INTERVAL, Keyring, MasterKey,
    PURPOSE_ENCRYPTION, STATE_ACTIVE, STATE_RETIRED, STATE_RETIRING, random_bytes,
};
use crate::limits::SCAN_BATCH_ROWS;
use crate::store::keys::{AddWraps, FinishWraps, StoredKey};
use crate::store::sealed::{self, Reseal, SEALED_COLUMNS, SealedColumn};
use crate::store::{Db, StoreError, keys as key_store};

/// Why `keys rotate` refuses while a master-key rotation is pending.
pub const MASTER_ROTATION_PENDING: &str = "a master key rotation is pending (`alphabank keys rotate-master`); finish it first with `alphabank keys rotate-master --finish`, run with the new master key configured";

/// How many passes over the tables before giving up; a pass after the first only meets rows that
/// a running server sealed under the old key while the rotation ran.
const ROTATION_PASSES_MAX: u32 = 5;

#[derive(Debug, Clone)]
pub struct RotationReport {
    pub new_key_id: u32,
    pub resealed: u64,
    pub resumed: bool,
}

/// Rotates with the full announce delay: safe while other instances serve.
pub async fn rotate(db: &Db, keyring: &Keyring) -> Result<RotationReport, CryptoError> {
    rotate_with_announce_delay(
        db,
        keyring,
        KEYRING_REFRESH_INTERVAL + KEYRING_ANNOUNCE_MARGIN,
    )
    .await
}

/// Rotates, waiting `delay` between announcing the new key and sealing under it. A delay shorter
/// than [`KEYRING_REFRESH_INTERVAL`] + [`KEYRING_ANNOUNCE_MARGIN`] is only safe when no other
/// instance is serving (or in tests that refresh the other instances' keyrings themselves).
pub async fn rotate_with_announce_delay(
    db: &Db,
    keyring: &Keyring,
    delay: Duration,
) -> Result<RotationReport, CryptoError> {
    if master_rotation_pending(db).await? {
        return Err(CryptoError::MasterKey(MASTER_ROTATION_PENDING.into()));
    }
    let stored = key_store::list(db).await?;
    let unfinished_reseal = stored
        .iter()
        .any(|k| k.purpose == PURPOSE_ENCRYPTION && k.state == STATE_RETIRING);
    let mut resumed = unfinished_reseal;
    if !unfinished_reseal {
        let (new_id, announced_before) = announced_key(db, keyring, &stored).await?;
        resumed = announced_before;
        // Every serving instance re-reads the keyring within one refresh interval; after that it
        // can open what is sealed under the new key.
        tokio::time::sleep(delay).await;
        key_store::begin_rotation(db, new_id).await?;
    }
    keyring.refresh(db).await?;
    let active = keyring.active_key_id();
    let resealed = reseal_all(db, keyring, active).await?;
    Ok(RotationReport {
        new_key_id: active,
        resealed,
        resumed,
    })
}

/// Step 1: the id of the key to promote, and whether an interrupted rotation had announced it
/// already; otherwise a new key is announced now.
async fn announced_key(
    db: &Db,
    keyring: &Keyring,
    stored: &[StoredKey],
) -> Result<(i64, bool), CryptoError> {
    let encryption = || stored.iter().filter(|k| k.purpose == PURPOSE_ENCRYPTION);
    let active_id = encryption()
        .filter(|k| k.state == STATE_ACTIVE)
        .map(|k| k.id)
        .max()
        .ok_or(CryptoError::MissingKey("active encryption"))?;
    let announced = encryption()
        .filter(|k| k.state == STATE_RETIRED && k.id > active_id)
        .map(|k| k.id)
        .max();
    if let Some(id) = announced {
        return Ok((id, true));
    }
    let id = key_store::next_id(db).await?;
    let key = Zeroizing::new(random_bytes::<32>());
    let wrapped = keyring.master().wrap(id, PURPOSE_ENCRYPTION, &key);
    if !key_store::announce_key(db, id, &wrapped).await? {
        return Err(CryptoError::MasterKey(MASTER_ROTATION_PENDING.into()));
    }
    Ok((id, false))
}

/// Step 3: re-seals under `active` every field sealed under another key, pass after pass until a
/// pass misses nothing; then the `retiring` keys become `retired`. Returns how many were re-sealed.
async fn reseal_all(db: &Db, keyring: &Keyring, active: u32) -> Result<u64, CryptoError> {
    let mut resealed = 0;
    for _pass in 0..ROTATION_PASSES_MAX {
        let mut missed = 0u64;
        for column in SEALED_COLUMNS {
            let (changed, column_missed) = reseal_column(db, keyring, column, active).await?;
            resealed += changed;
            missed += column_missed;
        }
        if missed == 0 {
            key_store::finish_rotation(db).await?;
            return Ok(resealed);
        }
    }
    Err(CryptoError::MasterKey(
        "rows kept changing under the old key; run `alphabank keys rotate` again to finish".into(),
    ))
}

/// One pass over one sealed column: how many values were re-sealed, and how many were missed
/// because a running server rewrote them meanwhile.
async fn reseal_column(
    db: &Db,
    keyring: &Keyring,
    column: &SealedColumn,
    active: u32,
) -> Result<(u64, u64), CryptoError> {
    let (mut resealed, mut missed) = (0, 0);
    let mut after = (0, 0);
    loop {
        let rows = sealed::values_after(db, column, after, SCAN_BATCH_ROWS).await?;
        let Some((last_key, _)) = rows.last() else {
            return Ok((resealed, missed));
        };
        after = *last_key;
        let mut batch: Vec<Reseal> = Vec::new();
        for (key, ciphertext) in rows {
            if Keyring::key_id_of(&ciphertext)? == active {
                continue;
            }
            let aad = Aad::new(column.table, column.column, column.row_label(key));
            let plain = keyring.open(&aad, &ciphertext)?;
            let fresh = keyring.seal(&aad, &plain);
            batch.push((key, ciphertext, fresh));
        }
        if !batch.is_empty() {
            let changed = sealed::replace_batch(db, column, &batch).await?;
            resealed += changed;
            missed += batch.len() as u64 - changed;
        }
    }
}

/// Whether a master-key rotation is pending (started, not finished).
pub async fn master_rotation_pending(db: &Db) -> Result<bool, CryptoError> {
    Ok(!key_store::pending_master_ids(db).await?.is_empty())
}

#[derive(Debug, thiserror::Error)]
pub enum MasterRotationError {
    /// The operator asked for something that is not possible now; nothing changed.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl From<StoreError> for MasterRotationError {
    fn from(error: StoreError) -> Self {
        MasterRotationError::Crypto(CryptoError::Store(error))
    }
}

#[derive(Debug, Clone)]
pub struct MasterRotationStarted {
    /// The new master key's id (hex; not secret).
    pub new_master_id: String,
    /// Whether the new key was generated (and written to the key file) by this run.
    pub generated: bool,
    /// How many data keys are now wrapped under the new master key too.
    pub data_keys: u64,
    /// True when this rotation was already pending (nothing new was written).
    pub already_pending: bool,
}

#[derive(Debug, Clone)]
pub struct MasterRotationFinished {
    pub new_master_id: String,
    pub data_keys: u64,
}

/// Phase 1 of a master-key rotation: loads the new key from `new_key_file` (or generates it
/// there, mode 0600) and, in one transaction, stores a wrapping of every data key under it.
/// Running it again with the same new key changes nothing; with another new key while a rotation
/// is pending it is refused.
pub async fn start_master_rotation(
    db: &Db,
    keyring: &Keyring,
    new_key_file: &Path,
) -> Result<MasterRotationStarted, MasterRotationError> {
    let pending = key_store::pending_master_ids(db).await?;
    if !pending.is_empty() && !new_key_file.exists() {
        // A generated key would certainly differ from the pending one: write no stray key file.
        return Err(MasterRotationError::Refused(other_pending_message(
            &pending,
        )));
    }
    let (new, generated) = MasterKey::load_or_create_new_key_file(new_key_file)?;
    let current = keyring.master();
    if new.same_key(current) {
        return Err(MasterRotationError::Refused(format!(
            "{} holds the master key that is configured now; a new master key must differ from the current one",
            new_key_file.display()
        )));
    }
    let outcome = key_store::add_master_wraps(db, &current.id(), &new.id(), |key| {
        let plain = current.unwrap_stored(key)?;
        Ok::<_, MasterRotationError>(new.wrap(key.id, &key.purpose, &plain))
    })
    .await?;
    match outcome {
        AddWraps::Added { keys, added } => Ok(MasterRotationStarted {
            new_master_id: new.id_hex(),
            generated,
            data_keys: keys,
            already_pending: added == 0,
        }),
        AddWraps::OtherPending(other) => Err(MasterRotationError::Refused(other_pending_message(
            std::slice::from_ref(&other),
        ))),
    }
}

fn other_pending_message(pending: &[Vec<u8>]) -> String {
    let ids: Vec<String> = pending.iter().map(hex::encode).collect();
    format!(
        "a master key rotation to another new key (id {}) is already pending; finish it first with `alphabank keys rotate-master --finish`, run with that key configured",
        ids.join(", ")
    )
}

/// Phase 2 of a master-key rotation, run with the new master key configured: in one transaction
/// every data key's stored wrapping becomes the one under the new key, and the wrappings under
/// the old key are gone. Refused when no rotation is pending or the configured key is not the
/// pending rotation's new key.
pub async fn finish_master_rotation(
    db: &Db,
    keyring: &Keyring,
) -> Result<MasterRotationFinished, MasterRotationError> {
    let master = keyring.master();
    let outcome = key_store::finish_master_rotation(db, &master.id(), |key, wrapped| {
        // Never store a wrapping the configured key cannot open.
        master.unwrap(key.id, &key.purpose, wrapped)?;
        Ok::<_, MasterRotationError>(())
    })
    .await?;
    match outcome {
        FinishWraps::Finished { keys } => Ok(MasterRotationFinished {
            new_master_id: master.id_hex(),
            data_keys: keys,
        }),
        FinishWraps::NotPending => Err(MasterRotationError::Refused(
            "no master key rotation is pending (already finished, or never started with `alphabank keys rotate-master --new-key-file PATH`)".into(),
        )),
        FinishWraps::NotTheNewKey => Err(MasterRotationError::Refused(format!(
            "the configured master key (id {}) is not the new key of the pending rotation; run --finish with the new key configured (ALPHABANK_MASTER_KEY_FILE=<the --new-key-file> or ALPHABANK_MASTER_KEY)",
            master.id_hex()
        ))),
    }
}
