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

use std::time::Duration;

use zeroize::Zeroizing;

use super::{
    Aad, CryptoError, KEYRING_ANNOUNCE_MARGIN, KEYRING_REFRESH_INTERVAL, Keyring,
    PURPOSE_ENCRYPTION, STATE_ACTIVE, STATE_RETIRED, STATE_RETIRING, random_bytes,
};
use crate::limits::SCAN_BATCH_ROWS;
use crate::store::sealed::{self, Reseal, SEALED_COLUMNS};
use crate::store::{Db, keys as key_store};

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
    let stored = key_store::list(db).await?;
    let encryption = || stored.iter().filter(|k| k.purpose == PURPOSE_ENCRYPTION);
    let unfinished_reseal = encryption().any(|k| k.state == STATE_RETIRING);
    let mut resumed = unfinished_reseal;
    if !unfinished_reseal {
        let active_id = encryption()
            .filter(|k| k.state == STATE_ACTIVE)
            .map(|k| k.id)
            .max()
            .ok_or(CryptoError::MissingKey("active encryption"))?;
        let announced = encryption()
            .filter(|k| k.state == STATE_RETIRED && k.id > active_id)
            .map(|k| k.id)
            .max();
        let new_id = match announced {
            Some(id) => {
                resumed = true;
                id
            }
            None => {
                let id = key_store::next_id(db).await?;
                let key = Zeroizing::new(random_bytes::<32>());
                let wrapped = keyring.master().wrap(id, PURPOSE_ENCRYPTION, &key);
                key_store::announce_key(db, id, &wrapped).await?;
                id
            }
        };
        // Every serving instance re-reads the keyring within one refresh interval; after that it
        // can open what is sealed under the new key.
        tokio::time::sleep(delay).await;
        key_store::begin_rotation(db, new_id).await?;
    }
    keyring.refresh(db).await?;
    let active = keyring.active_key_id();
    let mut resealed = 0;
    for _pass in 0..ROTATION_PASSES_MAX {
        let mut missed = 0u64;
        for column in SEALED_COLUMNS {
            let mut after = (0, 0);
            loop {
                let rows = sealed::values_after(db, column, after, SCAN_BATCH_ROWS).await?;
                let Some((last_key, _)) = rows.last() else {
                    break;
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
        if missed == 0 {
            key_store::finish_rotation(db).await?;
            return Ok(RotationReport {
                new_key_id: active,
                resealed,
                resumed,
            });
        }
    }
    Err(CryptoError::MasterKey(
        "rows kept changing under the old key; run `alphabank keys rotate` again to finish".into(),
    ))
}
