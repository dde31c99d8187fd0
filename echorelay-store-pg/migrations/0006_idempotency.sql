-- Idempotency keys of inbound messages (issue 19): per project, the first
-- message id sent under a key, until it expires (24 h by default). A claim
-- is one INSERT … ON CONFLICT that replaces only an expired row, so of
-- racing claims of one key exactly one wins (IdempotencyStore).
CREATE TABLE idempotency_keys (
    project    bytea       NOT NULL CHECK (length(project) = 16),
    key        text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    message    bytea       NOT NULL CHECK (length(message) = 16),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (project, key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
