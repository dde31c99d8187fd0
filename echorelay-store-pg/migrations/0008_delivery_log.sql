-- The relay's delivery log (issue 19, operations; core `deliveries`): a
-- project's messages (never their bodies), one delivery per message and
-- target, and every attempt. Operational history: purged after the
-- retention (`DeliveryLog::purge_delivery_log`), not in a snapshot.
CREATE TABLE relay_messages (
    project      bytea       NOT NULL CHECK (length(project) = 16),
    id           bytea       NOT NULL CHECK (length(id) = 16),
    endpoint     bytea       NOT NULL CHECK (length(endpoint) = 16),
    received_at  timestamptz NOT NULL,
    content_type text        CHECK (length(content_type) BETWEEN 1 AND 255),
    size         bigint      NOT NULL CHECK (size >= 0),
    PRIMARY KEY (project, id)
);
-- Newest-first pages of one project; the purge by age.
CREATE INDEX relay_messages_newest ON relay_messages (project, received_at DESC, id DESC);
CREATE INDEX relay_messages_by_age ON relay_messages (received_at);

CREATE TABLE relay_deliveries (
    project         bytea       NOT NULL,
    message         bytea       NOT NULL,
    target          bytea       NOT NULL CHECK (length(target) = 16),
    state           text        NOT NULL CHECK (state IN ('pending', 'retrying', 'delivered', 'dead')),
    attempts        bigint      NOT NULL CHECK (attempts BETWEEN 0 AND 4294967295),
    job             bytea       CHECK (length(job) = 16),
    updated_at      timestamptz NOT NULL,
    next_attempt_at timestamptz,
    last_status     integer     CHECK (last_status BETWEEN 0 AND 65535),
    last_class      text        CHECK (length(last_class) BETWEEN 1 AND 64),
    PRIMARY KEY (project, message, target),
    FOREIGN KEY (project, message) REFERENCES relay_messages (project, id) ON DELETE CASCADE
);
-- Dead letters per target, by message id; counts by state.
CREATE INDEX relay_deliveries_dead ON relay_deliveries (project, target, message)
    WHERE state = 'dead';
CREATE INDEX relay_deliveries_by_state ON relay_deliveries (project, state);

CREATE TABLE relay_attempts (
    project         bytea       NOT NULL,
    message         bytea       NOT NULL,
    target          bytea       NOT NULL,
    job             bytea       NOT NULL CHECK (length(job) = 16),
    attempt         bigint      NOT NULL CHECK (attempt BETWEEN 0 AND 4294967295),
    at              timestamptz NOT NULL,
    status          integer     CHECK (status BETWEEN 0 AND 65535),
    class           text        CHECK (length(class) BETWEEN 1 AND 64),
    latency_ms      bigint      NOT NULL CHECK (latency_ms BETWEEN 0 AND 4294967295),
    result          text        NOT NULL CHECK (result IN ('delivered', 'retrying', 'dead', 'lease_lost')),
    next_attempt_at timestamptz,
    excerpt         text        CHECK (octet_length(excerpt) BETWEEN 1 AND 1024),
    FOREIGN KEY (project, message, target)
        REFERENCES relay_deliveries (project, message, target) ON DELETE CASCADE
);
CREATE INDEX relay_attempts_of ON relay_attempts (project, message, at, target, attempt);
