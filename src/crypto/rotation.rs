//! `alphabank keys rotate`: a new data key becomes active and every sealed field is re-sealed
//! under it. Resumable: if interrupted, the next run finds the `retiring` key and carries on
//! without creating another. Old keys stay readable (state `retired`), so backups taken before the
//! rotation still open and a server that has not yet refreshed its keyring keeps working.

use zeroize::Zeroizing;

use super::{Aad, CryptoError, Keyring, PURPOSE_ENCRYPTION, STATE_RETIRING, random_bytes};
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

pub async fn rotate(db: &Db, keyring: &Keyring) -> Result<RotationReport, CryptoError> {
    let stored = key_store::list(db).await?;
    let resumed = stored
        .iter()
        .any(|k| k.purpose == PURPOSE_ENCRYPTION && k.state == STATE_RETIRING);
    if !resumed {
        let id = key_store::next_id(db).await?;
        let key = Zeroizing::new(random_bytes::<32>());
        let wrapped = keyring.master().wrap(id, PURPOSE_ENCRYPTION, &key);
        key_store::begin_rotation(db, id, &wrapped).await?;
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
