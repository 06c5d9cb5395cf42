//! Every sealed column, so that `keys rotate` can re-seal them all. The associated data of a
//! sealed field is `(table, column, row)` where `row` is the row's primary key rendered by
//! [`SealedColumn::row_label`]; the crypto module builds it, this module only moves bytes.

use super::{Db, StoreError};

/// A sealed column and how its rows are keyed.
#[derive(Debug, Clone, Copy)]
pub struct SealedColumn {
    pub table: &'static str,
    pub column: &'static str,
    /// `true` for `postings`, keyed by `(account_id, seq)`; otherwise keyed by `id`.
    composite: bool,
}

impl SealedColumn {
    /// The row label used in associated data: `id`, or `account_id:seq` for postings.
    pub fn row_label(&self, key: (i64, i64)) -> String {
        if self.composite {
            format!("{}:{}", key.0, key.1)
        } else {
            key.0.to_string()
        }
    }
}

pub const SEALED_COLUMNS: &[SealedColumn] = &[
    SealedColumn {
        table: "users",
        column: "email_enc",
        composite: false,
    },
    SealedColumn {
        table: "users",
        column: "totp_secret_enc",
        composite: false,
    },
    SealedColumn {
        table: "users",
        column: "totp_pending_enc",
        composite: false,
    },
    SealedColumn {
        table: "accounts",
        column: "balance_enc",
        composite: false,
    },
    SealedColumn {
        table: "journal_entries",
        column: "message_enc",
        composite: false,
    },
    SealedColumn {
        table: "journal_entries",
        column: "card_name_enc",
        composite: false,
    },
    SealedColumn {
        table: "passkeys",
        column: "credential_enc",
        composite: false,
    },
    SealedColumn {
        table: "passkeys",
        column: "name_enc",
        composite: false,
    },
    SealedColumn {
        table: "outbox",
        column: "body_enc",
        composite: false,
    },
    SealedColumn {
        table: "postings",
        column: "amount_enc",
        composite: true,
    },
];

/// One sealed value: its row key and ciphertext.
pub type SealedValue = ((i64, i64), Vec<u8>);

/// Non-null values of a sealed column after `after` (keyset pagination on the primary key).
pub async fn values_after(
    db: &Db,
    column: &SealedColumn,
    after: (i64, i64),
    limit: i64,
) -> Result<Vec<SealedValue>, StoreError> {
    let (table, col) = (column.table, column.column);
    if column.composite {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT account_id, seq, {col} FROM {table} WHERE {col} IS NOT NULL AND (account_id > $1 OR (account_id = $1 AND seq > $2)) ORDER BY account_id, seq LIMIT $3"
        ));
        let rows: Vec<(i64, i64, Vec<u8>)> = sqlx::query_as(sql)
            .bind(after.0)
            .bind(after.1)
            .bind(limit)
            .fetch_all(db.pool())
            .await?;
        Ok(rows.into_iter().map(|(a, s, v)| ((a, s), v)).collect())
    } else {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT id, {col} FROM {table} WHERE {col} IS NOT NULL AND id > $1 ORDER BY id LIMIT $2"
        ));
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(sql)
            .bind(after.0)
            .bind(limit)
            .fetch_all(db.pool())
            .await?;
        Ok(rows.into_iter().map(|(id, v)| ((id, 0), v)).collect())
    }
}

/// One re-sealed value: row key, the ciphertext read, the ciphertext to write.
pub type Reseal = ((i64, i64), Vec<u8>, Vec<u8>);

/// Replaces each `old` with `new` only where the value is still `old` (a concurrent writer wins;
/// the next pass re-seals what it wrote), in one transaction. Returns how many rows changed.
pub async fn replace_batch(
    db: &Db,
    column: &SealedColumn,
    batch: &[Reseal],
) -> Result<u64, StoreError> {
    let (table, col) = (column.table, column.column);
    let sql = if column.composite {
        format!("UPDATE {table} SET {col} = $1 WHERE account_id = $2 AND seq = $3 AND {col} = $4")
    } else {
        format!("UPDATE {table} SET {col} = $1 WHERE id = $2 AND {col} = $3")
    };
    let mut tx = db.begin_write().await?;
    let mut changed = 0;
    for (key, old, new) in batch {
        let query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(new.as_slice())
            .bind(key.0);
        let query = if column.composite {
            query.bind(key.1)
        } else {
            query
        };
        changed += query
            .bind(old.as_slice())
            .execute(tx.conn())
            .await?
            .rows_affected();
    }
    tx.commit().await?;
    Ok(changed)
}
