//! Password hashing with Argon2id (RFC 9106) at the configured cost, off the async runtime,
//! through a bounded pool: at most one hash per core in flight and a bounded queue; beyond it the
//! request is refused at once instead of queueing memory (each hash holds `m` KiB while it runs).
//! Hash strings are PHC strings carrying their parameters, so a hash made at an older cost is
//! recognised and rehashed at the next successful login.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::config::Argon2Cost;
use crate::domain::Password;

/// Requests allowed to wait for a hashing slot; more are refused with [`HashError::Busy`].
pub const ARGON2_QUEUE_DEPTH_MAX: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("The bank is busy. Please try again in a moment.")]
    Busy,
    #[error("password hashing failed: {0}")]
    Internal(String),
}

#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    dummy_hash: Arc<String>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PasswordHasher(m={} KiB, t={}, p={})",
            self.params.m_cost(),
            self.params.t_cost(),
            self.params.p_cost()
        )
    }
}

/// Outcome of verifying a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    No,
    Yes,
    /// Correct, but hashed at an older cost: store a fresh hash.
    YesRehash,
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

impl PasswordHasher {
    pub fn new(cost: Argon2Cost) -> Result<Self, HashError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| HashError::Internal(e.to_string()))?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        // A hash of a random password: verified for unknown emails so timing reveals nothing.
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let random = hex::encode(crate::crypto::random_bytes::<16>());
        let dummy = argon2(&params)
            .hash_password(random.as_bytes(), &salt)
            .map_err(|e| HashError::Internal(e.to_string()))?
            .to_string();
        Ok(PasswordHasher {
            params,
            slots: Arc::new(Semaphore::new(cores)),
            waiting: Arc::new(AtomicUsize::new(0)),
            dummy_hash: Arc::new(dummy),
        })
    }

    /// Runs `work` on the blocking pool once a slot is free, or refuses when the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= ARGON2_QUEUE_DEPTH_MAX {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(HashError::Busy);
        }
        let permit = self.slots.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let permit = permit.map_err(|_| HashError::Busy)?;
        let result = tokio::task::spawn_blocking(move || {
            let value = work();
            drop(permit);
            value
        })
        .await
        .map_err(|e| HashError::Internal(e.to_string()))?;
        Ok(result)
    }

    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let params = self.params.clone();
        let secret = zeroize::Zeroizing::new(password.expose().as_bytes().to_vec());
        self.run(move || {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            argon2(&params)
                .hash_password(&secret, &salt)
                .map(|h| h.to_string())
        })
        .await?
        .map_err(|e| HashError::Internal(e.to_string()))
    }

    /// Verifies `password` against `stored` (or against the dummy hash when `stored` is `None`,
    /// which always answers [`Verified::No`] after the same work).
    pub async fn verify(
        &self,
        stored: Option<&str>,
        password: &Password,
    ) -> Result<Verified, HashError> {
        let is_dummy = stored.is_none();
        let stored = stored
            .map(str::to_string)
            .unwrap_or_else(|| self.dummy_hash.to_string());
        let params = self.params.clone();
        let secret = zeroize::Zeroizing::new(password.expose().as_bytes().to_vec());
        self.run(move || {
            let Ok(parsed) = PasswordHash::new(&stored) else {
                return Verified::No;
            };
            let ok = Argon2::default().verify_password(&secret, &parsed).is_ok();
            if !ok || is_dummy {
                return Verified::No;
            }
            let current = Params::try_from(&parsed).ok();
            let outdated = parsed.algorithm != argon2::ARGON2ID_IDENT
                || current.is_none_or(|p| {
                    p.m_cost() < params.m_cost()
                        || p.t_cost() < params.t_cost()
                        || p.p_cost() < params.p_cost()
                });
            if outdated {
                Verified::YesRehash
            } else {
                Verified::Yes
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn cost() -> Argon2Cost {
        Argon2Cost {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn hashes_carry_parameters_and_verify() {
        let hasher = PasswordHasher::new(cost()).unwrap();
        let password = Password::parse_existing("correct horse battery staple").unwrap();
        let hash = hasher.hash(&password).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_eq!(
            hasher.verify(Some(&hash), &password).await.unwrap(),
            Verified::Yes
        );
        let wrong = Password::parse_existing("correct horse battery stapler").unwrap();
        assert_eq!(
            hasher.verify(Some(&hash), &wrong).await.unwrap(),
            Verified::No
        );
        assert_eq!(hasher.verify(None, &password).await.unwrap(), Verified::No);
        assert_eq!(
            hasher.verify(Some("garbage"), &password).await.unwrap(),
            Verified::No
        );
    }

    #[tokio::test]
    async fn an_older_cost_asks_for_a_rehash() {
        let weak = PasswordHasher::new(Argon2Cost {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        })
        .unwrap();
        let password = Password::parse_existing("correct horse battery staple").unwrap();
        let old_hash = weak.hash(&password).await.unwrap();
        let stronger = PasswordHasher::new(Argon2Cost {
            memory_kib: 19_456,
            iterations: 3,
            parallelism: 1,
        })
        .unwrap();
        assert_eq!(
            stronger.verify(Some(&old_hash), &password).await.unwrap(),
            Verified::YesRehash
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_instead_of_waiting() {
        let hasher = PasswordHasher::new(cost()).unwrap();
        let password = Password::parse_existing("correct horse battery staple").unwrap();
        let hash = hasher.hash(&password).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..(ARGON2_QUEUE_DEPTH_MAX + 20) {
            let (h, p, s) = (
                hasher.clone(),
                Password::parse_existing(password.expose()).unwrap(),
                hash.clone(),
            );
            tasks.push(tokio::spawn(async move { h.verify(Some(&s), &p).await }));
        }
        let mut busy = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Err(HashError::Busy)) {
                busy += 1;
            }
        }
        assert!(busy > 0, "some requests beyond the queue bound are refused");
    }
}
