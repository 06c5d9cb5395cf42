//! The WebAuthn ceremonies (CONTRACT §7) on `webauthn-rs-core`: creation and request options,
//! and the checks of a registration or an assertion (origin, RP id, challenge, flags with user
//! verification required, signature, counter).
//!
//! Why the core crate and not the `webauthn-rs` wrapper: the wrapper's passkeys are not
//! discoverable (no log-in without a username), and a signed payment needs a challenge that *is*
//! the payment (SHA-256 of its canonical text), while both crates only draw random ones. The
//! core's ceremony states are serde structures, so [`with_challenge`] puts our challenge into a
//! state it built; everything else (parsing, CBOR, COSE keys, signatures) stays the crate's.
//!
//! Challenges of log-in and registration are stateless: 16 random bytes, the expiry and a MAC
//! over both with the purpose and what the challenge is bound to (the visitor's CSRF token, or
//! the session), so nothing is written when options are asked for; answering one burns it
//! (`store::passkeys::burn_challenge`).

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use webauthn_rs_core::WebauthnCore;
use webauthn_rs_core::proto::{
    AttestationConveyancePreference, Base64UrlSafeData, COSEAlgorithm, Credential, CredentialID,
    PublicKeyCredential, RegisterPublicKeyCredential, UserVerificationPolicy,
};

use crate::crypto::Keyring;

/// How long a challenge (and the browser's prompt) lasts.
pub const CHALLENGE_TTL_MILLIS: i64 = 5 * 60 * 1_000;
/// The longest `credential` or `passkey_assertion` JSON accepted (a real one is well under 2 KiB).
pub const CREDENTIAL_JSON_BYTES_MAX: usize = 8 * 1024;
const CHALLENGE_RANDOM_BYTES: usize = 16;
const CHALLENGE_MAC_BYTES: usize = 16;
const CHALLENGE_BYTES: usize = CHALLENGE_RANDOM_BYTES + 8 + CHALLENGE_MAC_BYTES;

/// Why a ceremony's answer was refused (a customer's or an attacker's doing, never ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CeremonyError {
    #[error("the credential is not valid WebAuthn JSON")]
    Malformed,
    #[error("the challenge was not issued here, for this, or has expired")]
    BadChallenge,
    #[error("the answer does not verify")]
    Refused,
}

impl CeremonyError {
    /// The audit event's reason.
    pub fn reason(self) -> &'static str {
        match self {
            CeremonyError::Malformed => "malformed_credential",
            CeremonyError::BadChallenge => "bad_challenge",
            CeremonyError::Refused => "wrong_signature",
        }
    }
}

/// What a stateless challenge is for; part of its MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Login,
    Register,
}

impl Purpose {
    fn tag(self) -> &'static [u8] {
        match self {
            Purpose::Login => b"login",
            Purpose::Register => b"register",
        }
    }
}

/// A challenge this bank issued, opened: its bytes (to burn) and expiry.
pub struct OpenedChallenge {
    pub hash: [u8; 32],
    pub expires_millis: i64,
}

/// The relying party: `ALPHABANK_PUBLIC_URL`'s origin, its host as the RP id.
#[derive(Clone)]
pub struct RelyingParty {
    core: Arc<WebauthnCore>,
    rp_id: String,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty")
            .field("rp_id", &self.rp_id)
            .finish()
    }
}

impl RelyingParty {
    pub fn new(public_url: &url::Url) -> Self {
        let rp_id = public_url.host_str().unwrap_or("localhost").to_string();
        let timeout = std::time::Duration::from_millis(CHALLENGE_TTL_MILLIS.unsigned_abs());
        let core = WebauthnCore::new_unsafe_experts_only(
            "AlphaBank",
            &rp_id,
            vec![public_url.clone()],
            timeout,
            Some(false),
            Some(false),
        );
        RelyingParty {
            core: Arc::new(core),
            rp_id,
        }
    }

    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }

    /// Creation options (`PublicKeyCredentialCreationOptionsJSON`) for a new discoverable
    /// credential with user verification, ES256 or Ed25519, none of `existing` again.
    pub fn creation_options(
        &self,
        user: &WebauthnUser,
        existing: &[Credential],
        challenge: &[u8],
    ) -> Result<serde_json::Value, CeremonyError> {
        let (mut options, _) = self.registration(user, existing)?;
        options.public_key.challenge = Base64UrlSafeData::from(challenge.to_vec());
        serde_json::to_value(&options.public_key).map_err(|_| CeremonyError::Malformed)
    }

    fn registration(
        &self,
        user: &WebauthnUser,
        existing: &[Credential],
    ) -> Result<
        (
            webauthn_rs_core::proto::CreationChallengeResponse,
            webauthn_rs_core::proto::RegistrationState,
        ),
        CeremonyError,
    > {
        let exclude: Vec<CredentialID> = existing.iter().map(|c| c.cred_id.clone()).collect();
        let builder = self
            .core
            .new_challenge_register_builder(&user.handle, &user.name, &user.name)
            .map_err(|_| CeremonyError::Malformed)?
            .attestation(AttestationConveyancePreference::None)
            .credential_algorithms(vec![COSEAlgorithm::ES256, COSEAlgorithm::EDDSA])
            .require_resident_key(true)
            .authenticator_attachment(None)
            .user_verification_policy(UserVerificationPolicy::Required)
            .reject_synchronised_authenticators(false)
            .exclude_credentials(Some(exclude))
            .extensions(None);
        self.core
            .generate_challenge_register(builder)
            .map_err(|_| CeremonyError::Malformed)
    }

    /// Checks a registration answered to `challenge`: the new credential.
    pub fn register(
        &self,
        user: &WebauthnUser,
        existing: &[Credential],
        challenge: &[u8],
        response: &RegisterPublicKeyCredential,
    ) -> Result<Credential, CeremonyError> {
        let (_, state) = self.registration(user, existing)?;
        let state = with_challenge(state, challenge)?;
        self.core
            .register_credential(response, &state, None)
            .map_err(|error| {
                tracing::info!(%error, "passkey registration refused");
                CeremonyError::Refused
            })
    }

    /// Request options (`PublicKeyCredentialRequestOptionsJSON`) for `allowed` (empty: any
    /// discoverable credential), with user verification required, and the state to check the
    /// answer against.
    pub fn request(
        &self,
        allowed: Vec<Credential>,
        challenge: &[u8],
    ) -> Result<(serde_json::Value, AssertionState), CeremonyError> {
        let builder = self
            .core
            .new_challenge_authenticate_builder(allowed, Some(UserVerificationPolicy::Required))
            .map_err(|_| CeremonyError::Malformed)?
            .allow_backup_eligible_upgrade(true);
        let (mut options, state) = self
            .core
            .generate_challenge_authenticate(builder)
            .map_err(|_| CeremonyError::Malformed)?;
        options.public_key.challenge = Base64UrlSafeData::from(challenge.to_vec());
        let json =
            serde_json::to_value(&options.public_key).map_err(|_| CeremonyError::Malformed)?;
        Ok((json, AssertionState(with_challenge(state, challenge)?)))
    }

    /// Checks an assertion against `state` for `credential` (its stored counter in it): the
    /// counter the authenticator reported. A counter that did not move forward is refused.
    pub fn verify(
        &self,
        state: AssertionState,
        credential: Credential,
        response: &PublicKeyCredential,
    ) -> Result<u32, CeremonyError> {
        let mut state = state.0;
        state.set_allowed_credentials(vec![credential]);
        let result = self
            .core
            .authenticate_credential(response, &state)
            .map_err(|error| {
                tracing::info!(%error, "passkey assertion refused");
                CeremonyError::Refused
            })?;
        if !result.user_verified() {
            return Err(CeremonyError::Refused);
        }
        Ok(result.counter())
    }
}

/// The state an assertion is checked against (challenge, policy, allowed credentials).
pub struct AssertionState(webauthn_rs_core::proto::AuthenticationState);

/// Who a credential is created for: the WebAuthn user handle (no personal data) and username.
pub struct WebauthnUser {
    pub handle: Vec<u8>,
    pub name: String,
}

/// `state` with its challenge replaced by `challenge` (see the module doc). The field is the
/// crate's own serialised form; a crate update that renamed it fails every passkey test.
fn with_challenge<T: Serialize + DeserializeOwned>(
    state: T,
    challenge: &[u8],
) -> Result<T, CeremonyError> {
    let mut value = serde_json::to_value(state).map_err(|_| CeremonyError::Malformed)?;
    let object = value.as_object_mut().ok_or(CeremonyError::Malformed)?;
    if !object.contains_key("challenge") {
        return Err(CeremonyError::Malformed);
    }
    let encoded =
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, challenge);
    object.insert("challenge".into(), serde_json::Value::String(encoded));
    serde_json::from_value(value).map_err(|_| CeremonyError::Malformed)
}

/// Parses a `RegistrationResponseJSON` (bounded).
pub fn parse_registration(json: &str) -> Result<RegisterPublicKeyCredential, CeremonyError> {
    parse_bounded(json)
}

/// Parses an `AuthenticationResponseJSON` (bounded).
pub fn parse_assertion(json: &str) -> Result<PublicKeyCredential, CeremonyError> {
    parse_bounded(json)
}

fn parse_bounded<T: DeserializeOwned>(json: &str) -> Result<T, CeremonyError> {
    if json.is_empty() || json.len() > CREDENTIAL_JSON_BYTES_MAX {
        return Err(CeremonyError::Malformed);
    }
    serde_json::from_str(json).map_err(|_| CeremonyError::Malformed)
}

/// The challenge a response's `clientDataJSON` answers (not yet checked).
pub fn answered_challenge(client_data_json: &[u8]) -> Result<Vec<u8>, CeremonyError> {
    #[derive(serde::Deserialize)]
    struct ClientData {
        challenge: String,
    }
    let data: ClientData =
        serde_json::from_slice(client_data_json).map_err(|_| CeremonyError::Malformed)?;
    let text = data.challenge.trim_end_matches('=');
    base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, text)
        .map_err(|_| CeremonyError::Malformed)
}

/// A new stateless challenge for `purpose`, bound to `binding`, valid until `now` + the TTL.
pub fn issue_challenge(keyring: &Keyring, purpose: Purpose, binding: &[u8], now: i64) -> Vec<u8> {
    let random = crate::crypto::random_bytes::<CHALLENGE_RANDOM_BYTES>();
    let expires = (now + CHALLENGE_TTL_MILLIS).to_be_bytes();
    let mac = challenge_mac(keyring, purpose, binding, &random, &expires);
    [random.as_slice(), &expires, &mac].concat()
}

fn challenge_mac(
    keyring: &Keyring,
    purpose: Purpose,
    binding: &[u8],
    random: &[u8],
    expires: &[u8],
) -> Vec<u8> {
    let mac = keyring.mac(&[
        b"passkey-challenge-v1",
        purpose.tag(),
        binding,
        random,
        expires,
    ]);
    mac.get(..CHALLENGE_MAC_BYTES).unwrap_or_default().to_vec()
}

/// Opens a challenge issued by [`issue_challenge`] for `purpose` and `binding`, unexpired.
pub fn open_challenge(
    keyring: &Keyring,
    purpose: Purpose,
    binding: &[u8],
    challenge: &[u8],
    now: i64,
) -> Result<OpenedChallenge, CeremonyError> {
    if challenge.len() != CHALLENGE_BYTES {
        return Err(CeremonyError::BadChallenge);
    }
    let (random, rest) = challenge.split_at(CHALLENGE_RANDOM_BYTES);
    let (expires, mac) = rest.split_at(8);
    let expected = challenge_mac(keyring, purpose, binding, random, expires);
    if !crate::crypto::constant_time_eq(&expected, mac) {
        return Err(CeremonyError::BadChallenge);
    }
    let expires_millis = i64::from_be_bytes(
        expires
            .try_into()
            .map_err(|_| CeremonyError::BadChallenge)?,
    );
    if now > expires_millis {
        return Err(CeremonyError::BadChallenge);
    }
    Ok(OpenedChallenge {
        hash: crate::crypto::sha256(challenge),
        expires_millis,
    })
}
