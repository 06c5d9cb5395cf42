-- Master-key rotation (`alphabank keys rotate-master`): while a rotation is pending, every data key
-- is also wrapped under the new master key. `master_id` is a non-secret fingerprint of a master key
-- (HMAC-SHA256(master, "alphabank master key id v1"), first 16 bytes). `--finish` moves these
-- wrappings into data_keys.wrapped and deletes every row: an empty table means no rotation is pending.
CREATE TABLE data_key_wraps (
    key_id      BIGINT NOT NULL REFERENCES data_keys(id),
    master_id   BYTEA NOT NULL,
    wrapped     BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (key_id, master_id)
);
