-- AlphaBank schema v1 (SQLite). Times are Unix milliseconds (BIGINT); sealed fields are BLOB
-- ciphertexts whose associated data names table, column and row (see src/crypto).

CREATE TABLE data_keys (
    id          BIGINT PRIMARY KEY,
    purpose     TEXT NOT NULL CHECK (purpose IN ('enc', 'mac', 'bidx')),
    state       TEXT NOT NULL CHECK (state IN ('active', 'retiring', 'retired')),
    wrapped     BLOB NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id               BIGINT PRIMARY KEY,
    username         TEXT NOT NULL,
    username_key     TEXT NOT NULL UNIQUE,
    email_enc        BLOB NOT NULL,
    email_bidx       BLOB NOT NULL UNIQUE,
    password_hash    TEXT NOT NULL,
    totp_secret_enc  BLOB,
    totp_confirmed   BIGINT NOT NULL DEFAULT 0,
    totp_last_step   BIGINT NOT NULL DEFAULT 0,
    failed_logins    BIGINT NOT NULL DEFAULT 0,
    locked_until     BIGINT NOT NULL DEFAULT 0,
    lockouts         BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL
);

CREATE TABLE accounts (
    id           BIGINT PRIMARY KEY,
    user_id      BIGINT UNIQUE REFERENCES users (id),
    kind         TEXT NOT NULL CHECK (kind IN ('customer', 'cash')),
    balance_enc  BLOB NOT NULL,
    seq          BIGINT NOT NULL,
    head_mac     BLOB NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE journal_entries (
    id                 BIGINT PRIMARY KEY,
    kind               TEXT NOT NULL CHECK (kind IN ('deposit', 'transfer')),
    initiator_user_id  BIGINT NOT NULL REFERENCES users (id),
    created_at         BIGINT NOT NULL,
    message_enc        BLOB,
    card_name_enc      BLOB,
    mac                BLOB NOT NULL
);

CREATE TABLE postings (
    account_id               BIGINT NOT NULL REFERENCES accounts (id),
    seq                      BIGINT NOT NULL,
    entry_id                 BIGINT NOT NULL REFERENCES journal_entries (id),
    counterparty_account_id  BIGINT REFERENCES accounts (id),
    amount_enc               BLOB NOT NULL,
    created_at               BIGINT NOT NULL,
    prev_mac                 BLOB NOT NULL,
    mac                      BLOB NOT NULL,
    PRIMARY KEY (account_id, seq)
);
CREATE INDEX postings_by_entry ON postings (entry_id);

CREATE TABLE idempotency_keys (
    user_id     BIGINT NOT NULL REFERENCES users (id),
    key         TEXT NOT NULL,
    entry_id    BIGINT NOT NULL REFERENCES journal_entries (id),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, key)
);

CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    stream      TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    event       TEXT NOT NULL,
    user_id     BIGINT,
    client_ip   TEXT,
    request_id  TEXT,
    detail      TEXT NOT NULL,
    prev_mac    BLOB NOT NULL,
    mac         BLOB NOT NULL,
    UNIQUE (stream, seq)
);
CREATE INDEX audit_events_by_user ON audit_events (user_id, id);

CREATE TABLE audit_heads (
    stream  TEXT PRIMARY KEY,
    seq     BIGINT NOT NULL,
    mac     BLOB NOT NULL
);
