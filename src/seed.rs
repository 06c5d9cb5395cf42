//! `alphabank seed`: enrolled demo customers (`customer00001`…) created through the same services
//! the web uses — real Argon2 hashes, sealed emails and TOTP secrets, real ledger chains and audit
//! events — and H ledger movements for the first one, in one transaction. Writes the customers'
//! credentials as JSON to a file with mode 0600. Refuses a database that already holds customers.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;

use crate::audit::AuditContext;
use crate::auth::password::PasswordHasher;
use crate::domain::{Amount, CardName, DepositAmount, Email, Password, Username};
use crate::services::Services;
use crate::store::users as user_store;

/// Most customers one `seed` creates.
pub const SEED_CUSTOMERS_MAX: u32 = 100_000;
/// Most movements one `seed` gives the first customer.
pub const SEED_MOVEMENTS_MAX: u32 = 1_000_000;
/// Movements written per transaction.
const SEED_MOVEMENTS_PER_COMMIT: usize = 5_000;

#[derive(Serialize)]
pub struct SeededCustomer {
    pub username: String,
    pub email: String,
    pub password: String,
    pub totp_secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("the database already holds customers; seed only an empty database")]
    NotEmpty,
    #[error("{0}")]
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> SeedError {
    SeedError::Failed(e.to_string())
}

async fn create_one(
    services: &Services,
    hasher: &PasswordHasher,
    index: u32,
) -> Result<SeededCustomer, SeedError> {
    let username = format!("customer{index:05}");
    let email = format!("{username}@example.com");
    let password_text = format!(
        "seed {} {}",
        hex::encode(crate::crypto::random_bytes::<6>()),
        hex::encode(crate::crypto::random_bytes::<6>())
    );
    let password = Password::parse_new(&password_text, &username, &email).map_err(failed)?;
    let hash = loop {
        match hasher.hash(&password).await {
            Ok(hash) => break hash,
            Err(crate::auth::password::HashError::Busy) => tokio::task::yield_now().await,
            Err(e) => return Err(failed(e)),
        }
    };
    let ctx = AuditContext::system();
    let user_id = crate::customers::create(
        services,
        &ctx,
        &Username::parse(&username).map_err(failed)?,
        &Email::parse(&email).map_err(failed)?,
        &hash,
    )
    .await
    .map_err(failed)?;
    let secret = crate::auth::totp_secret(services, user_id)
        .await
        .map_err(failed)?;
    let mut tx = services.db.begin_write().await.map_err(failed)?;
    user_store::confirm_totp(&mut tx, user_id)
        .await
        .map_err(failed)?;
    tx.commit().await.map_err(failed)?;
    Ok(SeededCustomer {
        username,
        email,
        password: password_text,
        totp_secret: secret.base32(),
    })
}

pub async fn seed(
    services: &Services,
    customers: u32,
    movements: u32,
    out: &Path,
) -> Result<(), SeedError> {
    if user_store::count(&services.db).await.map_err(failed)? > 0 {
        return Err(SeedError::NotEmpty);
    }
    let created = create_all(services, customers.clamp(1, SEED_CUSTOMERS_MAX)).await?;
    if movements > 0 {
        let first = created
            .first()
            .ok_or_else(|| failed("no customer created"))?;
        deposit_movements(services, &first.username, movements).await?;
    }
    write_credentials(out, &created)
}

/// Creates customers 1..=`customers`, several at a time, in index order.
async fn create_all(services: &Services, customers: u32) -> Result<Vec<SeededCustomer>, SeedError> {
    // No pages to serve: hash on every core (the server's hasher leaves one free).
    let hasher = PasswordHasher::for_batch(services.config.argon2).map_err(failed)?;
    let parallel = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        * 2;
    let mut created = Vec::with_capacity(customers as usize);
    let mut next = 1;
    while next <= customers {
        let batch_end = (next + parallel as u32 - 1).min(customers);
        let mut tasks = tokio::task::JoinSet::new();
        for index in next..=batch_end {
            let (services, hasher) = (services.clone(), hasher.clone());
            tasks.spawn(async move { (index, create_one(&services, &hasher, index).await) });
        }
        let mut batch = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (index, result) = joined.map_err(failed)?;
            batch.push((index, result?));
        }
        batch.sort_by_key(|(i, _)| *i);
        created.extend(batch.into_iter().map(|(_, c)| c));
        next = batch_end + 1;
    }
    Ok(created)
}

/// `movements` card deposits for `username`, committed in chunks.
async fn deposit_movements(
    services: &Services,
    username: &str,
    movements: u32,
) -> Result<(), SeedError> {
    let (user_id, _) = user_store::id_by_username_key(&services.db, username)
        .await
        .map_err(failed)?
        .ok_or_else(|| failed("first customer not found"))?;
    let card = CardName::parse("Seed Card").map_err(failed)?;
    let amounts: Vec<DepositAmount> = (0..movements.min(SEED_MOVEMENTS_MAX))
        .map(|i| {
            DepositAmount::try_from(Amount::from_minor(100 + i64::from(i % 997)).map_err(failed)?)
                .map_err(failed)
        })
        .collect::<Result<_, _>>()?;
    for chunk in amounts.chunks(SEED_MOVEMENTS_PER_COMMIT) {
        services
            .ledger
            .seed_deposits(&AuditContext::system(), user_id, chunk, &card)
            .await
            .map_err(failed)?;
    }
    Ok(())
}

/// The credentials as JSON, in a file only its owner can read.
fn write_credentials(out: &Path, created: &[SeededCustomer]) -> Result<(), SeedError> {
    let json = serde_json::to_vec_pretty(created).map_err(failed)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| failed(format!("cannot write {}: {e}", out.display())))?;
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    file.write_all(&json).map_err(failed)?;
    Ok(())
}
