//! A software WebAuthn authenticator for the passkey tests: an ES256 key (the `p256` crate),
//! "none" attestation, user presence and verification flags set, a signature counter, and the
//! Level 3 `toJSON()` forms a browser posts. Written from the WebAuthn specification (§6.1
//! authenticator data, §6.5 attestation object, COSE key per RFC 9053), not from the server's
//! code.

use std::cell::Cell;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub struct SoftAuthenticator {
    key: SigningKey,
    pub credential_id: Vec<u8>,
    pub counter: Cell<u32>,
    /// The origin it believes it is talking to (what a browser puts in `clientDataJSON`).
    pub origin: String,
    /// The RP id it signs for (its hash begins the authenticator data).
    pub rp_id: String,
    /// The user handle it stored at registration (returned at log-in).
    pub user_handle: std::cell::RefCell<Vec<u8>>,
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    B64.decode(text.trim_end_matches('=')).expect("base64url")
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
            .unwrap()
            .host_str()
            .unwrap()
            .to_string();
        SoftAuthenticator {
            key,
            credential_id: alphabank::crypto::random_bytes::<16>().to_vec(),
            counter: Cell::new(0),
            origin: origin.to_string(),
            rp_id,
            user_handle: Default::default(),
        }
    }

    /// A copy of this authenticator (same key and credential): a clone.
    pub fn cloned(&self) -> Self {
        SoftAuthenticator {
            key: self.key.clone(),
            credential_id: self.credential_id.clone(),
            counter: Cell::new(self.counter.get()),
            origin: self.origin.clone(),
            rp_id: self.rp_id.clone(),
            user_handle: self.user_handle.clone(),
        }
    }

    fn cose_key(&self) -> Vec<u8> {
        let point = self.key.verifying_key().to_encoded_point(false);
        let mut key = head(5, 5);
        key.extend([0x01, 0x02]); // kty: EC2
        key.extend([0x03, 0x26]); // alg: ES256 (-7)
        key.extend([0x20, 0x01]); // crv: P-256
        key.push(0x21); // x
        key.extend(bytes(point.x().unwrap()));
        key.push(0x22); // y
        key.extend(bytes(point.y().unwrap()));
        key
    }

    fn auth_data(&self, flags: u8, attested: bool) -> Vec<u8> {
        let mut data = Sha256::digest(self.rp_id.as_bytes()).to_vec();
        data.push(flags);
        data.extend(self.counter.get().to_be_bytes());
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
        let challenge = options["challenge"].as_str().expect("challenge");
        *self.user_handle.borrow_mut() = unb64(options["user"]["id"].as_str().expect("user id"));
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
        self.assert_challenge(options["challenge"].as_str().expect("challenge"))
    }

    /// An `AuthenticationResponseJSON` over `challenge` (base64url).
    pub fn assert_challenge(&self, challenge: &str) -> String {
        self.counter.set(self.counter.get() + 1);
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
                "userHandle": b64(&self.user_handle.borrow()),
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        })
        .to_string()
    }
}
