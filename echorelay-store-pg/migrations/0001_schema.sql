-- echorelay schema, version 1. Documented in ../SCHEMA.md.
--
-- Conventions: ids are their 16 raw bytes (bytea, ordered as bytes, as the
-- port contracts require); hashes are 32 raw bytes; vault ciphertexts are
-- their binary form (docs/FORMATS.md); enums are their snake_case text with
-- a CHECK; nested values (audit actor and kind, a target's auth, a key
-- policy) are the JSON form core defines; times are timestamptz
-- (microseconds: the precision the audit chain hash covers); counters that
-- core holds as u64 are bigint >= 0.

CREATE TABLE projects (
    id                   bytea PRIMARY KEY CHECK (length(id) = 16),
    slug                 text COLLATE "C" NOT NULL UNIQUE,
    name                 text NOT NULL,
    key_policy           jsonb NOT NULL,
    created_at           timestamptz NOT NULL,
    version              bigint NOT NULL CHECK (version >= 0),
    api_keys_manage_keys boolean NOT NULL DEFAULT false
);

CREATE TABLE memberships (
    project bytea NOT NULL REFERENCES projects (id),
    user_id bytea NOT NULL CHECK (length(user_id) = 16),
    role    text NOT NULL CHECK (role IN ('viewer', 'editor', 'owner')),
    PRIMARY KEY (project, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id, project);

CREATE TABLE lines (
    id         bytea PRIMARY KEY CHECK (length(id) = 16),
    project    bytea NOT NULL REFERENCES projects (id),
    name       text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX lines_by_project ON lines (project, created_at, id);

CREATE TABLE endpoints (
    id         bytea PRIMARY KEY CHECK (length(id) = 16),
    project    bytea NOT NULL REFERENCES projects (id),
    line       bytea NOT NULL REFERENCES lines (id) ON DELETE CASCADE,
    name       text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX endpoints_by_project ON endpoints (project, created_at, id);
CREATE INDEX endpoints_by_line ON endpoints (line);

CREATE TABLE targets (
    id             bytea PRIMARY KEY CHECK (length(id) = 16),
    project        bytea NOT NULL REFERENCES projects (id),
    line           bytea NOT NULL REFERENCES lines (id) ON DELETE CASCADE,
    name           text NOT NULL,
    url            text NOT NULL,
    auth           jsonb NOT NULL,
    signing_secret bytea NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    version        bigint NOT NULL CHECK (version >= 0)
);
CREATE INDEX targets_by_project ON targets (project, created_at, id);
CREATE INDEX targets_by_line ON targets (line);

CREATE TABLE api_keys (
    id            bytea PRIMARY KEY CHECK (length(id) = 16),
    project       bytea NOT NULL REFERENCES projects (id),
    environment   text NOT NULL CHECK (environment IN ('live', 'test')),
    role          text NOT NULL CHECK (role IN ('viewer', 'editor', 'owner')),
    hash          bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
    hint          text NOT NULL,
    label         text NOT NULL,
    created_by    jsonb NOT NULL,
    created_at    timestamptz NOT NULL,
    rotate_at     timestamptz NOT NULL,
    predecessor   bytea,
    -- Supersession: all four set once a successor exists, else all null.
    successor     bytea,
    rotated_at    timestamptz,
    expires_at    timestamptz,
    grace_ends_at timestamptz,
    revoked_at    timestamptz,
    -- Pending reveal of an auto-rotated successor: both or neither.
    reveal_ciphertext bytea,
    reveal_until      timestamptz,
    CHECK ((successor IS NULL) = (rotated_at IS NULL)
       AND (successor IS NULL) = (expires_at IS NULL)
       AND (successor IS NULL) = (grace_ends_at IS NULL)),
    CHECK ((reveal_ciphertext IS NULL) = (reveal_until IS NULL))
);
CREATE INDEX api_keys_by_project ON api_keys (project, created_at, id);
CREATE INDEX api_keys_due ON api_keys (rotate_at) WHERE successor IS NULL AND revoked_at IS NULL;
CREATE INDEX api_keys_reveals ON api_keys (reveal_until) WHERE reveal_ciphertext IS NOT NULL;

-- The audit log. `chain` is the project id, or the empty bytea for the
-- global chain. One row per chain in audit_heads is the lock every append
-- takes (so seq is gap-free under concurrent writers, from any number of
-- pools), in the same transaction as the mutation it records.
CREATE TABLE audit_heads (
    chain bytea PRIMARY KEY,
    seq   bigint NOT NULL CHECK (seq >= 0),
    hash  bytea NOT NULL CHECK (length(hash) = 32)
);

CREATE TABLE audit_events (
    chain      bytea NOT NULL,
    seq        bigint NOT NULL CHECK (seq >= 1),
    id         bytea NOT NULL UNIQUE CHECK (length(id) = 16),
    project    bytea REFERENCES projects (id),
    at         timestamptz NOT NULL,
    actor      jsonb NOT NULL,
    -- The actor's user id when the actor is a user (for the GDPR export).
    actor_user bytea,
    ip         text,
    subject    bytea,
    kind       jsonb NOT NULL,
    prev_hash  bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash       bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (chain, seq),
    CHECK (chain = coalesce(project, '\x'::bytea))
);
CREATE INDEX audit_events_by_actor ON audit_events (actor_user) WHERE actor_user IS NOT NULL;
CREATE INDEX audit_events_by_subject ON audit_events (subject) WHERE subject IS NOT NULL;

-- Append-only, enforced by the database for every role and every client,
-- not only by echorelay's API.
CREATE FUNCTION echorelay_audit_is_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION echorelay_audit_is_append_only();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION echorelay_audit_is_append_only();

-- Accounts. No foreign keys from sessions, challenges or memberships to
-- accounts: those ports may live in another store (composed backends).
CREATE TABLE accounts (
    id            bytea PRIMARY KEY CHECK (length(id) = 16),
    -- Normalised by core; compared byte for byte (collation "C").
    email         text COLLATE "C" NOT NULL UNIQUE,
    password_hash text NOT NULL,
    epoch         bigint NOT NULL CHECK (epoch >= 0),
    created_at    timestamptz NOT NULL
);

CREATE TABLE totp_factors (
    user_id    bytea PRIMARY KEY REFERENCES accounts (id),
    seed       bytea NOT NULL,
    active     boolean NOT NULL,
    last_step  bigint CHECK (last_step >= 0),
    created_at timestamptz NOT NULL
);

CREATE TABLE backup_codes (
    user_id bytea NOT NULL REFERENCES accounts (id),
    idx     smallint NOT NULL CHECK (idx BETWEEN 0 AND 255),
    salt    bytea NOT NULL CHECK (length(salt) = 16),
    hash    bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (user_id, idx)
);

-- Throttle counters: one row per reserved attempt.
CREATE TABLE attempts (
    scope text COLLATE "C" NOT NULL,
    at    timestamptz NOT NULL
);
CREATE INDEX attempts_by_scope ON attempts (scope, at);

CREATE TABLE devices (
    id           bytea PRIMARY KEY CHECK (length(id) = 16),
    user_id      bytea NOT NULL CHECK (length(user_id) = 16),
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    ip_family    text NOT NULL CHECK (ip_family IN ('v4', 'v6')),
    epoch        bigint NOT NULL CHECK (epoch >= 0)
);
CREATE INDEX devices_by_user ON devices (user_id, created_at, id);

CREATE TABLE sessions (
    id           bytea PRIMARY KEY CHECK (length(id) = 16),
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    user_id      bytea NOT NULL CHECK (length(user_id) = 16),
    created_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    verified_at  timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    ip_family    text NOT NULL CHECK (ip_family IN ('v4', 'v6')),
    epoch        bigint NOT NULL CHECK (epoch >= 0)
);
CREATE INDEX sessions_by_user ON sessions (user_id, created_at, id);

CREATE TABLE challenges (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id    bytea NOT NULL CHECK (length(user_id) = 16),
    kind       text NOT NULL CHECK (kind IN ('second_factor', 'enrollment')),
    expires_at timestamptz NOT NULL,
    ip_family  text NOT NULL CHECK (ip_family IN ('v4', 'v6')),
    epoch      bigint NOT NULL CHECK (epoch >= 0)
);

-- Verification caches (optional, see the crate's `cache` module). Every
-- change to a key's verification status sends NOTIFY echorelay_keys with a
-- number from this sequence, in its own transaction; after the commit the
-- writer waits until every cache with a valid lease has acknowledged it.
CREATE SEQUENCE key_invalidation_seq;

CREATE TABLE key_cache_instances (
    id              bytea PRIMARY KEY CHECK (length(id) = 16),
    lease_until     timestamptz NOT NULL,
    -- Every invalidation up to this number was committed before the
    -- cache's current listener started (and its flush): it need not
    -- acknowledge those.
    covered_through bigint NOT NULL DEFAULT 0
);

CREATE TABLE key_cache_acks (
    instance bytea NOT NULL REFERENCES key_cache_instances (id) ON DELETE CASCADE,
    seq      bigint NOT NULL,
    acked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance, seq)
);
