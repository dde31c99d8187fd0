-- The job queue (echorelay_core::queue; issue 17). Documented in
-- ../SCHEMA.md, "The job queue".
--
-- One row per job that is waiting, delayed, in flight or dead; an acked or
-- purged job is deleted. `state` is 'ready' (waiting, delayed or in flight)
-- or 'dead' (the dead-letter set). `run_at` holds the lease end and the due
-- time in one column: with `lease_nonce` NULL it is when the job is due;
-- with `lease_nonce` set it is when the lease ends, after which the job is
-- due again (an expired lease is waiting, at-least-once). So "due" is
-- always `state = 'ready' AND run_at <= now`, one range of one index.
CREATE TABLE queue_jobs (
    id           bytea PRIMARY KEY CHECK (length(id) = 16),
    queue        text COLLATE "C" NOT NULL CHECK (length(queue) BETWEEN 1 AND 64),
    state        text NOT NULL CHECK (state IN ('ready', 'dead')),
    run_at       timestamptz NOT NULL,
    lease_nonce  bytea CHECK (length(lease_nonce) = 16),
    attempts     integer NOT NULL CHECK (attempts >= 0),
    max_attempts integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 1000),
    dedup_key    text COLLATE "C" CHECK (length(dedup_key) BETWEEN 1 AND 200),
    payload      bytea NOT NULL,
    enqueued_at  timestamptz NOT NULL,
    error_class  text CHECK (length(error_class) BETWEEN 1 AND 64),
    died_at      timestamptz,
    -- A dead job holds no lease and has its class and time of death; a
    -- ready one has neither.
    CHECK (state = 'ready' OR lease_nonce IS NULL),
    CHECK ((state = 'dead') = (error_class IS NOT NULL)),
    CHECK ((state = 'dead') = (died_at IS NOT NULL))
) WITH (
    -- Every job is inserted, updated and deleted: vacuum early so the
    -- reserve range is not strewn with dead index entries.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02
);

-- The reserve path: due jobs of a queue, earliest first.
CREATE INDEX queue_jobs_due ON queue_jobs (queue, run_at) WHERE state = 'ready';
-- De-duplication: one live (ready) job per key and queue; a dead job frees
-- its key, an acked one is gone.
CREATE UNIQUE INDEX queue_jobs_dedup ON queue_jobs (queue, dedup_key)
    WHERE dedup_key IS NOT NULL AND state = 'ready';
-- The dead-letter set, paged by id.
CREATE INDEX queue_jobs_dead ON queue_jobs (queue, id) WHERE state = 'dead';
