-- Browsers that completed a login to an account (CONTRACT §3): the HMAC of the device cookie
-- (blind-index key, domain "device"), never the cookie itself. Each known browser has its own
-- consecutive-failure count and lock; every other browser shares the count on the users row
-- (failed_logins, locked_until, lockouts).
CREATE TABLE devices (
    user_id        BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_hash    BYTEA NOT NULL,
    created_at     BIGINT NOT NULL,
    last_login_at  BIGINT NOT NULL,
    failures       BIGINT NOT NULL DEFAULT 0,
    locked_until   BIGINT NOT NULL DEFAULT 0,
    lockouts       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_hash)
);

-- Sign-ups per client address and window (counted before the password is hashed).
CREATE TABLE signup_throttle (
    client_ip     TEXT PRIMARY KEY,
    window_start  BIGINT NOT NULL,
    attempts      BIGINT NOT NULL
);
