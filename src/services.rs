//! The shared services (database, keyring, audit, ledger, payments, hasher, captcha, rate
//! limiter) that every request and every CLI command works with; `startup::open_services` opens
//! them.

use std::sync::Arc;

use crate::audit::AuditLog;
use crate::auth::passkey::Passkeys;
use crate::auth::password::PasswordHasher;
use crate::captcha::Captcha;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::crypto::master::MasterKeySource;
use crate::ledger::Ledger;
use crate::mail::Outbox;
use crate::payments::Payments;
use crate::rate_limit::ClientLimiter;
use crate::store::Db;

/// Everything a request or a CLI command needs; cheap to share: one reference count per clone
/// (axum clones the state for every extractor of every request).
#[derive(Clone, Debug)]
pub struct Services(Arc<ServiceSet>);

impl std::ops::Deref for Services {
    type Target = ServiceSet;
    fn deref(&self) -> &ServiceSet {
        &self.0
    }
}

impl From<ServiceSet> for Services {
    fn from(set: ServiceSet) -> Self {
        Services(Arc::new(set))
    }
}

/// The services themselves (reached through [`Services`]).
#[derive(Clone, Debug)]
pub struct ServiceSet {
    pub config: Arc<Config>,
    pub db: Db,
    pub keyring: Keyring,
    pub audit: AuditLog,
    pub ledger: Ledger,
    pub payments: Payments,
    pub passkeys: Passkeys,
    pub outbox: Outbox,
    pub hasher: PasswordHasher,
    pub captcha: Captcha,
    pub rate_limiter: Arc<ClientLimiter>,
    pub in_flight: Arc<tokio::sync::Semaphore>,
    pub master_key_source: MasterKeySource,
}
