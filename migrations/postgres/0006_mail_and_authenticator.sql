-- Outgoing mail (CONTRACT §8). A message is written in the transaction of the event that causes
-- it and deleted once delivered. Its recipient is the customer's address at the time of sending
-- (a removed account takes its unsent mail with it); its text, which may carry a code, is sealed
-- under the row's id. next_attempt_at is when it is due: a sender claiming it moves it one lease
-- ahead, so another instance takes it only if the sender died; attempts counts the claims and
-- fences a sender whose lease ran out.
CREATE TABLE outbox (
    id              BIGINT PRIMARY KEY,
    user_id         BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    body_enc        BYTEA NOT NULL,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at);
CREATE INDEX outbox_user ON outbox (user_id);

-- A replacement authenticator's secret (CONTRACT §9), sealed, from the moment the customer asks
-- for it until its first code confirms it; the old secret stays valid until then.
ALTER TABLE users ADD COLUMN totp_pending_enc BYTEA;

-- How a session logged in, when it matters later: "recovery_code" makes the home page say how
-- many codes are left and offer a new authenticator. NULL otherwise.
ALTER TABLE sessions ADD COLUMN login_method TEXT;

-- Codes sent by mail (CONTRACT §9): one live code per customer and purpose ("recover"), stored as
-- a MAC, valid until expires_at; each check is charged to tries first, so at most 5 guesses are
-- evaluated, and a right one deletes the row.
CREATE TABLE email_codes (
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    purpose    TEXT NOT NULL,
    code_mac   BYTEA NOT NULL,
    expires_at BIGINT NOT NULL,
    tries      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, purpose)
);
