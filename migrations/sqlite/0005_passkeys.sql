-- Passkeys (CONTRACT §7). The credential (public key, counter at registration, flags) and the
-- customer's name for it are sealed like TOTP secrets; credential_bidx is the blind index
-- (domain "passkey") of its credential id, for the log-in lookup; sign_count is the highest
-- signature counter seen, raised atomically so that a cloned authenticator is noticed.
CREATE TABLE passkeys (
    id              BIGINT PRIMARY KEY,
    user_id         BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    credential_bidx BLOB NOT NULL UNIQUE,
    credential_enc  BLOB NOT NULL,
    name_enc        BLOB NOT NULL,
    sign_count      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    last_used_at    BIGINT
);
CREATE INDEX passkeys_user ON passkeys (user_id);

-- WebAuthn challenges already answered (a challenge is single-use). The challenge itself is
-- MACed and carries its expiry, so nothing is stored when one is issued; rows are swept once
-- expired.
CREATE TABLE passkey_challenges_used (
    challenge_hash  BLOB PRIMARY KEY,
    expires_at      BIGINT NOT NULL
);
