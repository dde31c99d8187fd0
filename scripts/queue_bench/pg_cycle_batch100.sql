-- 100 full queue cycles per pgbench transaction (issue 17 raw-SQL
-- ceiling, batched): enqueue 100 in one INSERT, reserve 100 in one
-- UPDATE, ack 100 in one DELETE; three statements, each its own
-- transaction (autocommit). Table, payload, lease and attempts as in
-- pg_cycle_single.sql. One nonce per reserve call, as queue.rs uses.

INSERT INTO queue_jobs (id, queue, state, run_at, attempts, max_attempts, payload, enqueued_at)
SELECT uuid_send(gen_random_uuid()), 'bench', 'ready', now(), 0, 5,
       '\x7b226576656e74223a2262656e6368222c226e223a317d'::bytea, now()
FROM generate_series(1, 100);

WITH n AS MATERIALIZED (SELECT uuid_send(gen_random_uuid()) AS nonce),
due AS (
    SELECT id FROM queue_jobs
    WHERE queue = 'bench' AND state = 'ready' AND run_at <= now()
    ORDER BY run_at LIMIT 100
    FOR UPDATE SKIP LOCKED
),
leased AS (
    UPDATE queue_jobs q
    SET attempts = q.attempts + 1, lease_nonce = n.nonce, run_at = now() + interval '60 seconds'
    FROM n
    WHERE q.id IN (SELECT id FROM due)
    RETURNING q.id, q.lease_nonce, q.payload, q.attempts, q.max_attempts, q.enqueued_at, q.run_at
)
SELECT coalesce(array_agg(id), '{}') AS r_ids, (SELECT nonce FROM n) AS r_nonce,
       count(*) AS r_n, sum(length(payload)) AS r_bytes
FROM leased
\gset

-- ack_many: one DELETE of the reserved ids under the HELD condition.
DELETE FROM queue_jobs j
WHERE j.id = ANY (:r_ids::bytea[]) AND j.state = 'ready' AND j.lease_nonce = :r_nonce
  AND j.run_at > now();
