//! Passkeys (CONTRACT §7): a customer's credentials (added after a one-time code, at most
//! [`PASSKEYS_PER_USER_MAX`], sealed at rest like TOTP secrets), log-in with a passkey alone
//! (user verification makes it both factors), and the signature of a payment over its
//! canonical text. The ceremonies themselves are in [`super::webauthn`].
//!
//! Counters: the highest signature counter seen is stored beside the sealed credential and
//! raised in one statement with each use (`store::passkeys::record_use`); an assertion whose
//! counter did not move forward is refused as a possibly cloned authenticator and audited.

use webauthn_rs_core::proto::{Credential, PublicKeyCredential};

use super::webauthn::{self, AssertionState, CeremonyError, Purpose, RelyingParty, WebauthnUser};
use super::{AuthError, Gate, LoggedIn, Refusal};
use crate::audit::{AuditContext, AuditEvent, AuditLog, Signature};
use crate::crypto::{Aad, Keyring};
use crate::domain::{PasskeyName, UserId};
use crate::mail::{Mail, Outbox};
use crate::services::Services;
use crate::store::passkeys::{self as passkey_store, Inserted, NewPasskey, PasskeyRow};
use crate::store::{Db, failures as failure_store};

/// Passkeys one customer may hold.
pub const PASSKEYS_PER_USER_MAX: i64 = 10;

/// A passkey as the settings page lists it.
pub struct PasskeyView {
    pub id: i64,
    pub name: String,
    pub created_millis: i64,
    pub last_used_millis: Option<i64>,
}

/// Why a new passkey was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddRefusal {
    Ceremony(CeremonyError),
    /// [`PASSKEYS_PER_USER_MAX`] already.
    Full,
    /// That authenticator's credential is registered already.
    Duplicate,
}

/// A verified assertion: which passkey signed.
pub struct Asserted {
    pub passkey_id: i64,
    pub credential: String,
    pub user_id: UserId,
}

/// A payment's passkey signature, verified: the movement's transaction raises the counter.
#[derive(Debug, Clone)]
pub struct VerifiedSignature {
    pub signature: Signature,
    pub counter: i64,
}

/// The passkey service (cheap to clone).
#[derive(Clone, Debug)]
pub struct Passkeys {
    rp: RelyingParty,
    db: Db,
    keyring: Keyring,
    audit: AuditLog,
    outbox: Outbox,
}

fn credential_aad(id: i64) -> Aad {
    Aad::new("passkeys", "credential_enc", id)
}

fn name_aad(id: i64) -> Aad {
    Aad::new("passkeys", "name_enc", id)
}

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

impl Passkeys {
    pub fn new(
        public_url: &url::Url,
        db: Db,
        keyring: Keyring,
        audit: AuditLog,
        outbox: Outbox,
    ) -> Self {
        Passkeys {
            rp: RelyingParty::new(public_url),
            db,
            keyring,
            audit,
            outbox,
        }
    }

    fn bidx(&self, credential_id: &[u8]) -> Vec<u8> {
        self.keyring.blind_index("passkey", &b64(credential_id))
    }

    /// The customer's WebAuthn user handle: derived, stable, and free of personal data.
    fn user_handle(&self, user: UserId) -> Vec<u8> {
        let index = self.keyring.blind_index("webauthn-user", &user.to_string());
        index.get(..16).unwrap_or_default().to_vec()
    }

    fn open(&self, row: &PasskeyRow) -> Result<Credential, AuthError> {
        let bytes = self
            .keyring
            .open(&credential_aad(row.id), &row.credential_enc)?;
        let mut credential: Credential = serde_json::from_slice(&bytes)
            .map_err(|e| AuthError::Internal(format!("stored passkey unreadable: {e}")))?;
        credential.counter = u32::try_from(row.sign_count).unwrap_or(u32::MAX);
        Ok(credential)
    }

    async fn stored(&self, user: UserId) -> Result<Vec<(PasskeyRow, Credential)>, AuthError> {
        let rows = passkey_store::list_for_user(&self.db, user).await?;
        rows.into_iter()
            .map(|row| self.open(&row).map(|c| (row, c)))
            .collect()
    }

    /// The customer's passkeys, oldest first.
    pub async fn list(&self, user: UserId) -> Result<Vec<PasskeyView>, AuthError> {
        let rows = passkey_store::list_for_user(&self.db, user).await?;
        rows.into_iter()
            .map(|row| {
                let name = self.keyring.open_string(&name_aad(row.id), &row.name_enc)?;
                Ok(PasskeyView {
                    id: row.id,
                    name,
                    created_millis: row.created_millis,
                    last_used_millis: row.last_used_millis,
                })
            })
            .collect()
    }

    /// Creation options for a new passkey of `user`, bound to the session `binding`; `None`
    /// when the customer holds the most already.
    pub async fn creation_options(
        &self,
        user: UserId,
        username: &str,
        binding: &[u8],
    ) -> Result<Option<serde_json::Value>, AuthError> {
        let existing: Vec<Credential> = self
            .stored(user)
            .await?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        if existing.len() >= usize::try_from(PASSKEYS_PER_USER_MAX).unwrap_or(usize::MAX) {
            return Ok(None);
        }
        let who = self.webauthn_user(user, username);
        let challenge = webauthn::issue_challenge(
            &self.keyring,
            Purpose::Register,
            binding,
            crate::now_millis(),
        );
        let options = self
            .rp
            .creation_options(&who, &existing, &challenge)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        Ok(Some(options))
    }

    fn webauthn_user(&self, user: UserId, username: &str) -> WebauthnUser {
        WebauthnUser {
            handle: self.user_handle(user),
            name: username.to_string(),
        }
    }

    /// Adds the passkey a registration response (`json`) creates, answering a challenge of
    /// [`Passkeys::creation_options`] for the same `binding`: `Ok(its id)` (audited).
    pub async fn add(
        &self,
        ctx: &AuditContext,
        (user, username): (UserId, &str),
        binding: &[u8],
        name: &PasskeyName,
        json: &str,
    ) -> Result<Result<i64, AddRefusal>, AuthError> {
        let outcome = self.register(user, username, binding, json).await?;
        let outcome = match outcome {
            Ok(credential) => self.store(user, name, &credential).await?,
            Err(error) => Err(AddRefusal::Ceremony(error)),
        };
        let ctx = ctx.with_user(user);
        if let Ok(passkey_id) = &outcome {
            let event = AuditEvent::PasskeyAdded {
                passkey_id: *passkey_id,
            };
            let mail = Mail::passkey_added(self.outbox.public_url(), crate::now_millis());
            self.outbox
                .record_and_notify(&ctx, event, user, &mail)
                .await;
        }
        let event = match &outcome {
            Ok(_) => return Ok(outcome),
            Err(refusal) => AuditEvent::PasskeyRefused {
                action: "add",
                reason: match refusal {
                    AddRefusal::Ceremony(error) => error.reason(),
                    AddRefusal::Full => "too_many_passkeys",
                    AddRefusal::Duplicate => "already_registered",
                },
            },
        };
        self.audit.record_best_effort(&ctx, event).await;
        Ok(outcome)
    }

    async fn register(
        &self,
        user: UserId,
        username: &str,
        binding: &[u8],
        json: &str,
    ) -> Result<Result<Credential, CeremonyError>, AuthError> {
        let response = match webauthn::parse_registration(json) {
            Ok(response) => response,
            Err(error) => return Ok(Err(error)),
        };
        let challenge = match self
            .burn(
                Purpose::Register,
                binding,
                response.response.client_data_json.as_ref(),
            )
            .await?
        {
            Ok(challenge) => challenge,
            Err(error) => return Ok(Err(error)),
        };
        let existing: Vec<Credential> = self
            .stored(user)
            .await?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        let who = self.webauthn_user(user, username);
        Ok(self.rp.register(&who, &existing, &challenge, &response))
    }

    /// Opens the challenge a response answers and burns it (single use): the challenge.
    async fn burn(
        &self,
        purpose: Purpose,
        binding: &[u8],
        client_data_json: &[u8],
    ) -> Result<Result<Vec<u8>, CeremonyError>, AuthError> {
        let challenge = match webauthn::answered_challenge(client_data_json) {
            Ok(challenge) => challenge,
            Err(error) => return Ok(Err(error)),
        };
        let now = crate::now_millis();
        let opened =
            match webauthn::open_challenge(&self.keyring, purpose, binding, &challenge, now) {
                Ok(opened) => opened,
                Err(error) => return Ok(Err(error)),
            };
        if !passkey_store::burn_challenge(&self.db, &opened.hash, opened.expires_millis).await? {
            return Ok(Err(CeremonyError::BadChallenge));
        }
        Ok(Ok(challenge))
    }

    async fn store(
        &self,
        user: UserId,
        name: &PasskeyName,
        credential: &Credential,
    ) -> Result<Result<i64, AddRefusal>, AuthError> {
        let id = crate::crypto::random_row_id();
        let json =
            serde_json::to_vec(credential).map_err(|e| AuthError::Internal(e.to_string()))?;
        let new = NewPasskey {
            id,
            user_id: user,
            credential_bidx: &self.bidx(credential.cred_id.as_ref()),
            credential_enc: &self.keyring.seal(&credential_aad(id), &json),
            name_enc: &self.keyring.seal_str(&name_aad(id), name.as_str()),
            sign_count: i64::from(credential.counter),
            now: crate::now_millis(),
        };
        Ok(
            match passkey_store::insert(&self.db, &new, PASSKEYS_PER_USER_MAX).await? {
                Inserted::Added => Ok(id),
                Inserted::Full => Err(AddRefusal::Full),
                Inserted::Duplicate => Err(AddRefusal::Duplicate),
            },
        )
    }

    /// Removes one of the customer's passkeys (audited); `false` if they have no passkey `id`.
    pub async fn remove(
        &self,
        ctx: &AuditContext,
        user: UserId,
        id: i64,
    ) -> Result<bool, AuthError> {
        let removed = passkey_store::remove(&self.db, user, id).await?;
        if removed {
            let event = AuditEvent::PasskeyRemoved { passkey_id: id };
            let mail = Mail::passkey_removed(self.outbox.public_url(), crate::now_millis());
            self.outbox.record_and_notify(ctx, event, user, &mail).await;
        }
        Ok(removed)
    }

    /// Request options for a log-in with any discoverable passkey, bound to the visitor's CSRF
    /// token.
    pub fn login_options(&self, binding: &[u8]) -> Result<serde_json::Value, AuthError> {
        let challenge =
            webauthn::issue_challenge(&self.keyring, Purpose::Login, binding, crate::now_millis());
        let (options, _) = self
            .rp
            .request(Vec::new(), &challenge)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        Ok(options)
    }

    /// Request options for signing the payment whose digest is `digest` with one of the
    /// customer's passkeys; `None` when they have none.
    pub async fn payment_options(
        &self,
        user: UserId,
        digest: &[u8; 32],
    ) -> Result<Option<serde_json::Value>, AuthError> {
        let credentials: Vec<Credential> = self
            .stored(user)
            .await?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        if credentials.is_empty() {
            return Ok(None);
        }
        let (options, _) = self
            .rp
            .request(credentials, digest)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        Ok(Some(options))
    }

    /// Checks that `json` is the signature of one of `user`'s passkeys over `digest` (a
    /// payment's): the signature of the movement's audit event, and the counter its
    /// transaction must raise.
    pub async fn verify_payment(
        &self,
        ctx: &AuditContext,
        user: UserId,
        digest: &[u8; 32],
        json: &str,
    ) -> Result<Result<VerifiedSignature, CeremonyError>, AuthError> {
        let response = match webauthn::parse_assertion(json) {
            Ok(response) => response,
            Err(error) => return Ok(Err(error)),
        };
        let found = self.credential_of(&response).await?;
        let Some(row) = found.filter(|row| row.user_id == user) else {
            return Ok(Err(CeremonyError::Refused));
        };
        // The state allows the one credential that signed (set when it is checked).
        let (_, state) = self
            .rp
            .request(Vec::new(), digest)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        Ok(self
            .check(ctx, state, &row, &response)
            .await?
            .map(|(asserted, counter)| VerifiedSignature {
                signature: Signature {
                    digest: hex::encode(digest),
                    passkey_id: asserted.passkey_id,
                    credential: asserted.credential,
                },
                counter: i64::from(counter),
            }))
    }

    async fn credential_of(
        &self,
        response: &PublicKeyCredential,
    ) -> Result<Option<PasskeyRow>, AuthError> {
        let bidx = self.bidx(response.raw_id.as_ref());
        Ok(passkey_store::by_credential(&self.db, &bidx).await?)
    }

    /// Verifies an assertion for the passkey `row` and records its counter; a counter that did
    /// not move forward is refused and audited as a possible clone.
    async fn assert(
        &self,
        ctx: &AuditContext,
        state: AssertionState,
        row: &PasskeyRow,
        response: &PublicKeyCredential,
    ) -> Result<Result<Asserted, CeremonyError>, AuthError> {
        let (asserted, counter) = match self.check(ctx, state, row, response).await? {
            Ok(checked) => checked,
            Err(error) => return Ok(Err(error)),
        };
        let now = crate::now_millis();
        if !passkey_store::record_use(&self.db, row.id, i64::from(counter), now).await? {
            self.audit_clone(ctx, row).await;
            return Ok(Err(CeremonyError::Refused));
        }
        Ok(Ok(asserted))
    }

    /// Verifies an assertion for the passkey `row` (signature, flags, a counter ahead of the
    /// stored one): who signed, and the counter to record.
    async fn check(
        &self,
        ctx: &AuditContext,
        state: AssertionState,
        row: &PasskeyRow,
        response: &PublicKeyCredential,
    ) -> Result<Result<(Asserted, u32), CeremonyError>, AuthError> {
        let handle_ok = response.response.user_handle.as_ref().is_none_or(|h| {
            crate::crypto::constant_time_eq(h.as_ref(), &self.user_handle(row.user_id))
        });
        if !handle_ok {
            return Ok(Err(CeremonyError::Refused));
        }
        let credential = self.open(row)?;
        let stored_counter = credential.counter;
        let counter = match self.rp.verify(state, credential, response) {
            Ok(counter) => counter,
            Err(error) => {
                // The crate refuses a counter that did not move forward: say why.
                if stored_counter > 0 && counter_went_back(response, stored_counter) {
                    self.audit_clone(ctx, row).await;
                }
                return Ok(Err(error));
            }
        };
        let asserted = Asserted {
            passkey_id: row.id,
            credential: b64(response.raw_id.as_ref()),
            user_id: row.user_id,
        };
        Ok(Ok((asserted, counter)))
    }

    async fn audit_clone(&self, ctx: &AuditContext, row: &PasskeyRow) {
        let event = AuditEvent::PasskeyCloneSuspected { passkey_id: row.id };
        self.audit
            .record_best_effort(&ctx.with_user(row.user_id), event)
            .await;
    }
}

/// Whether the authenticator data's counter (bytes 33..37) is at or below `stored`.
fn counter_went_back(response: &PublicKeyCredential, stored: u32) -> bool {
    let data: &[u8] = response.response.authenticator_data.as_ref();
    data.get(33..37)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .is_some_and(|counter| counter <= stored)
}

/// What a passkey log-in carries.
pub struct PasskeyLogin<'a> {
    pub credential: &'a str,
    /// The visitor's CSRF token: the login challenge is bound to it.
    pub binding: &'a [u8],
    pub device_cookie: Option<&'a str>,
}

/// Logs a customer in with a passkey alone (CONTRACT §7). Every failure is
/// [`AuthError::LoginFailed`]; a wrong signature for a known credential counts toward its
/// account's failures (charged first, as a password is), on the browser's side (§3).
pub async fn login(
    services: &Services,
    ctx: &AuditContext,
    attempt: &PasskeyLogin<'_>,
    user_agent: Option<&str>,
) -> Result<LoggedIn, AuthError> {
    let now = crate::now_millis();
    let ip = ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    super::refuse_throttled_address(services, ctx, &ip, now).await?;
    let refuse = |reason, user_id| Refusal { reason, user_id };
    let passkeys = &services.passkeys;
    let response = match webauthn::parse_assertion(attempt.credential) {
        Ok(response) => response,
        Err(error) => {
            return super::refused(services, ctx, &ip, now, refuse(error.reason(), None)).await;
        }
    };
    let client_data = response.response.client_data_json.as_ref();
    if let Err(error) = passkeys
        .burn(Purpose::Login, attempt.binding, client_data)
        .await?
    {
        return super::refused(services, ctx, &ip, now, refuse(error.reason(), None)).await;
    }
    let Some(row) = passkeys.credential_of(&response).await? else {
        return super::refused(services, ctx, &ip, now, refuse("unknown_passkey", None)).await;
    };
    let user = crate::store::users::auth_by_id(&services.db, row.user_id).await?;
    let charged = match super::gate(services, user, attempt.device_cookie, now).await? {
        Gate::Open(charged) => charged,
        Gate::NoAccount => {
            return super::refused(services, ctx, &ip, now, refuse("unknown_passkey", None)).await;
        }
        Gate::Locked(id) => {
            return super::refused(services, ctx, &ip, now, refuse("locked", Some(id))).await;
        }
    };
    let user_id = charged.user.id;
    let challenge = webauthn::answered_challenge(client_data).unwrap_or_default();
    let (_, state) = passkeys
        .rp
        .request(Vec::new(), &challenge)
        .map_err(|e| AuthError::Internal(e.to_string()))?;
    if let Err(error) = passkeys.assert(ctx, state, &row, &response).await? {
        let (side, count) = (&charged.side, charged.count);
        super::failures::lock_if_full(&services.db, &services.outbox, ctx, user_id, side, count)
            .await?;
        return super::refused(
            services,
            ctx,
            &ip,
            now,
            refuse(error.reason(), Some(user_id)),
        )
        .await;
    }
    if !failure_store::clear(&services.db, user_id, &charged.side, crate::now_millis()).await? {
        return super::refused(services, ctx, &ip, now, refuse("locked", Some(user_id))).await;
    }
    let session =
        super::complete_login(services, ctx, user_id, None, "passkey", user_agent).await?;
    let seen = super::DeviceSeen::LoggedIn { ctx, user_agent };
    let device_cookie =
        super::remember_device(services, user_id, attempt.device_cookie, seen).await?;
    Ok(LoggedIn {
        session,
        device_cookie,
    })
}
