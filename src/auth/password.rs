//! Password hashing with Argon2id (RFC 9106) at the configured cost, off the async runtime,
//! through a bounded pool: one hashing thread per core but one, and a bounded queue; beyond it the
//! request is refused at once instead of queueing memory (each hash holds `m` KiB while it runs).
//! Hash strings are PHC strings carrying their parameters, so a hash made at an older cost is
//! recognised and rehashed at the next successful login.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::config::Argon2Cost;
use crate::domain::Password;

/// Hashing requests allowed to wait for a thread; more are refused with [`HashError::Busy`].
pub const ARGON2_QUEUE_DEPTH_MAX: usize = 32;
/// How much nicer than the server the hashing threads run (19 is the lowest priority there is).
pub const ARGON2_NICE: i32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("The bank is busy. Please try again in a moment.")]
    Busy,
    #[error("password hashing failed: {0}")]
    Internal(String),
}

/// A job for the hashing threads.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// Argon2 runs on a small fixed set of threads (one per core but one) fed by a bounded queue. A fixed set
/// matters: each thread's allocator keeps the `m` KiB it used, so hashing on an unbounded blocking
/// pool would let resident memory grow with the number of threads ever used.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    queue: std::sync::mpsc::SyncSender<Job>,
    dummy_hash: Arc<String>,
    /// Jobs queued or running, and how many fit (threads + queue depth).
    pending: Arc<std::sync::atomic::AtomicUsize>,
    capacity: usize,
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

/// Hashing threads run at a lower CPU priority (nice +`ARGON2_NICE`) than the rest of the
/// server: when a login flood keeps them busy, pages, the database and the sessions of customers
/// already logged in are served first, and hashing gets what is left. With no contention a
/// hash takes the same time. Failing to lower it (a platform that refuses) is logged, not fatal.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // On Linux, PRIO_PROCESS with a thread id sets that thread's nice value only. Relative
        // to the server's own (a server already started with `nice` stays below it).
        let tid = rustix::thread::gettid();
        let set = rustix::process::getpriority_process(Some(tid)).and_then(|own| {
            rustix::process::setpriority_process(Some(tid), (own + ARGON2_NICE).min(19))
        });
        if let Err(error) = set {
            tracing::warn!(%error, "could not lower the priority of a password-hashing thread");
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// `workers` threads; the channel has room for every admitted job (see `PasswordHasher::run`).
fn start_workers(workers: usize) -> Result<std::sync::mpsc::SyncSender<Job>, HashError> {
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Job>(workers + ARGON2_QUEUE_DEPTH_MAX);
    let receiver = Arc::new(std::sync::Mutex::new(receiver));
    for index in 0..workers {
        let receiver = receiver.clone();
        std::thread::Builder::new()
            .name(format!("argon2-{index}"))
            .spawn(move || {
                lower_priority();
                loop {
                    let job = receiver.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => break, // the hasher was dropped
                    }
                }
            })
            .map_err(|e| HashError::Internal(e.to_string()))?;
    }
    Ok(sender)
}

impl PasswordHasher {
    /// The server's hasher: one hashing thread per core but one (at least one), so under a
    /// flood of logins a core stays free for pages, the database and the rest of the server.
    pub fn new(cost: Argon2Cost) -> Result<Self, HashError> {
        Self::with_threads(cost, cores().saturating_sub(1).max(1))
    }

    /// A hasher with one thread per core, for batch work that serves no pages (`alphabank seed`).
    pub fn for_batch(cost: Argon2Cost) -> Result<Self, HashError> {
        Self::with_threads(cost, cores())
    }

    fn with_threads(cost: Argon2Cost, threads: usize) -> Result<Self, HashError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| HashError::Internal(e.to_string()))?;
        // A hash of a random password: verified for unknown emails so timing reveals nothing.
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let random = hex::encode(crate::crypto::random_bytes::<16>());
        let dummy = argon2(&params)
            .hash_password(random.as_bytes(), &salt)
            .map_err(|e| HashError::Internal(e.to_string()))?
            .to_string();
        Ok(PasswordHasher {
            params,
            queue: start_workers(threads)?,
            dummy_hash: Arc::new(dummy),
            pending: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            capacity: threads + ARGON2_QUEUE_DEPTH_MAX,
        })
    }

    /// Whether every hashing thread is busy and the queue is full: a request that would hash
    /// can be refused (503) before it does any other work — a flood of logins then costs the
    /// database nothing. (A hash request that finds the pool full in between still gets
    /// [`HashError::Busy`].)
    pub fn is_saturated(&self) -> bool {
        self.pending.load(std::sync::atomic::Ordering::Acquire) >= self.capacity
    }

    /// Runs `work` on a hashing thread, or refuses at once when the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        use std::sync::atomic::Ordering;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = self.pending.clone();
        // Admission: at most one job per thread running and ARGON2_QUEUE_DEPTH_MAX waiting.
        if pending.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            pending.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Busy);
        }
        let done = pending.clone();
        let job: Job = Box::new(move || {
            let result = work();
            // Freed before the answer, so a caller that has its answer sees the place free.
            done.fetch_sub(1, Ordering::AcqRel);
            let _ = reply.send(result);
        });
        self.queue
            .try_send(job)
            .inspect_err(|_| {
                pending.fetch_sub(1, Ordering::AcqRel);
            })
            .map_err(|e| match e {
                std::sync::mpsc::TrySendError::Full(_) => HashError::Busy,
                std::sync::mpsc::TrySendError::Disconnected(_) => {
                    HashError::Internal("hashing threads stopped".into())
                }
            })?;
        answer
            .await
            .map_err(|_| HashError::Internal("hashing thread failed".into()))
    }

    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let params = self.params.clone();
        let secret = zeroize::Zeroizing::new(password.expose().as_bytes().to_vec());
        self.run(move || hash_with_reused_memory(&params, &secret))
            .await?
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
            let ok = verify_with_reused_memory(&parsed, &secret);
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

thread_local! {
    /// Each hashing thread keeps one Argon2 memory area and reuses it: memory is allocated once
    /// per thread, not once per hash (the allocator would otherwise keep freed areas around).
    static BLOCKS: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn with_blocks<T>(count: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
    BLOCKS.with(|cell| {
        let mut blocks = cell.borrow_mut();
        if blocks.len() < count {
            blocks.resize(count, Block::default());
        }
        let area = blocks.get_mut(..count).unwrap_or_default();
        let result = work(area);
        // Wipe what the hash left behind (it derives from the password).
        for block in area.iter_mut() {
            *block = Block::default();
        }
        result
    })
}

/// Output length of new hashes (bytes), as in the `argon2` crate's default.
const HASH_OUTPUT_BYTES: usize = 32;

fn hash_with_reused_memory(params: &Params, secret: &[u8]) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_raw = salt
        .as_salt()
        .decode_b64(&mut salt_buf)
        .map_err(|e| HashError::Internal(e.to_string()))?;
    let mut out = zeroize::Zeroizing::new([0u8; HASH_OUTPUT_BYTES]);
    with_blocks(params.block_count(), |blocks| {
        argon2(params).hash_password_into_with_memory(secret, salt_raw, &mut out[..], blocks)
    })
    .map_err(|e| HashError::Internal(e.to_string()))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: argon2::password_hash::ParamsString::try_from(params)
            .map_err(|e| HashError::Internal(e.to_string()))?,
        salt: Some(salt.as_salt()),
        hash: Some(
            argon2::password_hash::Output::new(&out[..])
                .map_err(|e| HashError::Internal(e.to_string()))?,
        ),
    };
    Ok(phc.to_string())
}

fn verify_with_reused_memory(parsed: &PasswordHash<'_>, secret: &[u8]) -> bool {
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(parsed),
        parsed.salt,
        parsed.hash,
    ) else {
        return false;
    };
    let version = parsed
        .version
        .and_then(|v| Version::try_from(v).ok())
        .unwrap_or(Version::V0x13);
    let mut salt_buf = [0u8; 64];
    let Ok(salt_raw) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = zeroize::Zeroizing::new(vec![0u8; expected.len()]);
    let computed = with_blocks(params.block_count(), |blocks| {
        Argon2::new(algorithm, version, params.clone())
            .hash_password_into_with_memory(secret, salt_raw, &mut out, blocks)
    });
    computed.is_ok() && crate::crypto::constant_time_eq(&out, expected.as_bytes())
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

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_yield_the_cpu_to_the_rest_of_the_server() {
        let own = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let hasher = PasswordHasher::new(cost()).unwrap();
        let theirs = hasher
            .run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(theirs, (own + ARGON2_NICE).min(19));
        assert!(theirs > own || own == 19);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn saturation_is_visible_before_a_request_would_be_refused() {
        use std::sync::atomic::Ordering;
        let hasher = PasswordHasher::new(cost()).unwrap();
        assert!(!hasher.is_saturated());
        // Jobs that hold their hashing thread until released fill every thread and the queue.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(std::sync::Mutex::new(held));
        let mut tasks = Vec::new();
        for _ in 0..hasher.capacity {
            let (h, held) = (hasher.clone(), held.clone());
            tasks.push(tokio::spawn(async move {
                h.run(move || {
                    let _ = held.lock().unwrap().recv();
                })
                .await
            }));
        }
        while hasher.pending.load(Ordering::Acquire) < hasher.capacity {
            tokio::task::yield_now().await;
        }
        assert!(hasher.is_saturated());
        assert!(matches!(hasher.run(|| ()).await, Err(HashError::Busy)));
        for _ in 0..hasher.capacity {
            release.send(()).unwrap();
        }
        for task in tasks {
            assert!(task.await.unwrap().is_ok());
        }
        assert!(!hasher.is_saturated(), "finished jobs free their places");
    }
}
