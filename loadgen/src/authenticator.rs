//! A software WebAuthn authenticator (the load generator's signed transfers, and the passkey API
//! tests, which include this file): an ES256 key (the `p256` crate), "none" attestation, user
//! presence and verification flags set, a signature counter, and the Level 3 `toJSON()` forms a
//! browser posts. Written from the WebAuthn specification (§6.1 authenticator data, §6.5
//! attestation object, COSE key per RFC 9053), not from the server's code.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub struct SoftAuthenticator {
    key: SigningKey,
    pub credential_id: Vec<u8>,
    pub counter: AtomicU32,
    /// The origin it believes it is talking to (what a browser puts in `clientDataJSON`).
    pub origin: String,
    /// The RP id it signs for (its hash begins the authenticator data).
    pub rp_id: String,
    /// The user handle it stored at registration (returned at log-in).
    pub user_handle: Mutex<Vec<u8>>,
}

/// What [`SoftAuthenticator::saved`] keeps (test data: the private key in hex).
#[derive(serde::Serialize, serde::Deserialize, Clone)]
pub struct SavedAuthenticator {
    pub key_hex: String,
    pub credential_id: String,
    pub counter: u32,
    pub user_handle: String,
    pub origin: String,
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Base64url (padding tolerated) decoded; empty when it does not decode.
pub fn unb64(text: &str) -> Vec<u8> {
    B64.decode(text.trim_end_matches('=')).unwrap_or_default()
}

/// CBOR: a major type with its length argument.
fn head(major: u8, len: usize) -> Vec<u8> {
    let m = major << 5;
    match len {
        0..=23 => vec![m | len as u8],
        24..=255 => vec![m | 24, len as u8],
        _ => {
            let mut v = vec![m | 25];
            v.extend_from_slice(&(len as u16).to_be_bytes());
            v
        }
    }
}

fn bytes(b: &[u8]) -> Vec<u8> {
    [head(2, b.len()), b.to_vec()].concat()
}

fn text(t: &str) -> Vec<u8> {
    [head(3, t.len()), t.as_bytes().to_vec()].concat()
}

impl SoftAuthenticator {
    pub fn new(origin: &str) -> Self {
        let key = loop {
            if let Ok(key) = SigningKey::from_slice(&alphabank::crypto::random_bytes::<32>()) {
                break key;
            }
        };
        let rp_id = url::Url::parse(origin)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        SoftAuthenticator {
            key,
            credential_id: alphabank::crypto::random_bytes::<16>().to_vec(),
            counter: AtomicU32::new(0),
            origin: origin.to_string(),
            rp_id,
            user_handle: Default::default(),
        }
    }

    /// The authenticator as a value to store (the load generator's `--state`).
    pub fn saved(&self) -> SavedAuthenticator {
        SavedAuthenticator {
            key_hex: hex::encode(self.key.to_bytes()),
            credential_id: b64(&self.credential_id),
            counter: self.counter(),
            user_handle: b64(&self.user_handle()),
            origin: self.origin.clone(),
        }
    }

    /// An authenticator from [`SoftAuthenticator::saved`]; `None` if it does not parse.
    pub fn restore(saved: &SavedAuthenticator) -> Option<Self> {
        let key = SigningKey::from_slice(&hex::decode(&saved.key_hex).ok()?).ok()?;
        let rp_id = url::Url::parse(&saved.origin).ok()?.host_str()?.to_string();
        Some(SoftAuthenticator {
            key,
            credential_id: B64.decode(&saved.credential_id).ok()?,
            counter: AtomicU32::new(saved.counter),
            origin: saved.origin.clone(),
            rp_id,
            user_handle: Mutex::new(B64.decode(&saved.user_handle).ok()?),
        })
    }

    pub fn counter(&self) -> u32 {
        self.counter.load(Ordering::SeqCst)
    }

    pub fn set_counter(&self, counter: u32) {
        self.counter.store(counter, Ordering::SeqCst);
    }

    fn user_handle(&self) -> Vec<u8> {
        self.user_handle
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default()
    }

    /// A copy of this authenticator (same key and credential): a clone.
    pub fn cloned(&self) -> Self {
        SoftAuthenticator {
            key: self.key.clone(),
            credential_id: self.credential_id.clone(),
            counter: AtomicU32::new(self.counter()),
            origin: self.origin.clone(),
            rp_id: self.rp_id.clone(),
            user_handle: Mutex::new(self.user_handle()),
        }
    }

    fn cose_key(&self) -> Vec<u8> {
        let point = self.key.verifying_key().to_encoded_point(false);
        let mut key = head(5, 5);
        key.extend([0x01, 0x02]); // kty: EC2
        key.extend([0x03, 0x26]); // alg: ES256 (-7)
        key.extend([0x20, 0x01]); // crv: P-256
        key.push(0x21); // x
        key.extend(bytes(point.x().map(|x| x.as_slice()).unwrap_or_default()));
        key.push(0x22); // y
        key.extend(bytes(point.y().map(|y| y.as_slice()).unwrap_or_default()));
        key
    }

    fn auth_data(&self, flags: u8, attested: bool) -> Vec<u8> {
        let mut data = Sha256::digest(self.rp_id.as_bytes()).to_vec();
        data.push(flags);
        data.extend(self.counter().to_be_bytes());
        if attested {
            data.extend([0u8; 16]); // AAGUID
            data.extend((self.credential_id.len() as u16).to_be_bytes());
            data.extend(&self.credential_id);
            data.extend(self.cose_key());
        }
        data
    }

    fn client_data(&self, kind: &str, challenge: &str) -> Vec<u8> {
        json!({
            "type": kind,
            "challenge": challenge,
            "origin": self.origin,
            "crossOrigin": false,
        })
        .to_string()
        .into_bytes()
    }

    /// A `RegistrationResponseJSON` for creation options (`PublicKeyCredentialCreationOptionsJSON`).
    pub fn register(&self, options: &Value) -> String {
        let handle = options
            .get("user")
            .and_then(|u| u.get("id"))
            .and_then(Value::as_str)
            .map(unb64)
            .unwrap_or_default();
        if let Ok(mut stored) = self.user_handle.lock() {
            *stored = handle;
        }
        let challenge = options
            .get("challenge")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let client_data = self.client_data("webauthn.create", challenge);
        // UP | UV | AT
        let auth_data = self.auth_data(0x45, true);
        let mut attestation = head(5, 3);
        attestation.extend(text("fmt"));
        attestation.extend(text("none"));
        attestation.extend(text("attStmt"));
        attestation.extend(head(5, 0));
        attestation.extend(text("authData"));
        attestation.extend(bytes(&auth_data));
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(&client_data),
                "attestationObject": b64(&attestation),
                "transports": ["internal"],
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        })
        .to_string()
    }

    /// An `AuthenticationResponseJSON` over request options' challenge (the counter moves on).
    pub fn assert(&self, options: &Value) -> String {
        let challenge = options.get("challenge").and_then(Value::as_str);
        self.assert_challenge(challenge.unwrap_or_default())
    }

    /// An `AuthenticationResponseJSON` over `challenge` (base64url).
    pub fn assert_challenge(&self, challenge: &str) -> String {
        self.counter.fetch_add(1, Ordering::SeqCst);
        let client_data = self.client_data("webauthn.get", challenge);
        // UP | UV
        let auth_data = self.auth_data(0x05, false);
        let signed = [auth_data.clone(), Sha256::digest(&client_data).to_vec()].concat();
        let signature: Signature = self.key.sign(&signed);
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(&client_data),
                "authenticatorData": b64(&auth_data),
                "signature": b64(signature.to_der().as_bytes()),
                "userHandle": b64(&self.user_handle()),
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        })
        .to_string()
    }
}
