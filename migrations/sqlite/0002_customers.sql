-- Sessions, recovery codes, login throttling, captcha replay store (SQLite).

CREATE TABLE sessions (
    id_hash            TEXT PRIMARY KEY,          -- hex SHA-256 of the cookie value; the value itself is never stored
    user_id            BIGINT NOT NULL REFERENCES users (id),
    stage              TEXT NOT NULL CHECK (stage IN ('pending_2fa', 'full')),
    csrf_token         TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    last_seen_at       BIGINT NOT NULL,
    client_ip          TEXT,
    user_agent         TEXT,
    recovery_codes_enc BLOB,                     -- the ten codes, sealed, until /2fa/recovery shows them once
    flash              TEXT                       -- one message that survives exactly one redirect
);
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);

CREATE TABLE recovery_codes (
    user_id    BIGINT NOT NULL REFERENCES users (id),
    code_hash  BLOB NOT NULL,                    -- HMAC of the code with the blind-index key
    used_at    BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE login_throttle (
    client_ip     TEXT PRIMARY KEY,
    window_start  BIGINT NOT NULL,
    attempts      BIGINT NOT NULL
);

CREATE TABLE captcha_spent (
    challenge_hash  BLOB PRIMARY KEY,
    expires_at      BIGINT NOT NULL
);
CREATE INDEX captcha_spent_by_expiry ON captcha_spent (expires_at);
