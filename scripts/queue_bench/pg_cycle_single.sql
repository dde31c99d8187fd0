-- One full queue cycle per pgbench transaction (issue 17 raw-SQL ceiling):
-- enqueue 1 -> reserve 1 -> ack 1, three statements, each its own
-- transaction (autocommit), as echorelay-store-pg runs them. Table:
-- queue_jobs from echorelay-store-pg/migrations/0004_queue.sql. The
-- payload is benches/queue.rs's PAYLOAD ({"event":"bench","n":1}), the
-- lease 60 s, max attempts 5. See pg_ceiling.sh and README.md.

-- enqueue: one job, due now (queue.rs enqueue's INSERT, minus unnest,
-- ON CONFLICT and pg_notify).
INSERT INTO queue_jobs (id, queue, state, run_at, attempts, max_attempts, payload, enqueued_at)
VALUES (uuid_send(gen_random_uuid()), 'bench', 'ready', now(), 0, 5,
        '\x7b226576656e74223a2262656e6368222c226e223a317d'::bytea, now());

-- reserve: the earliest due job, FOR UPDATE SKIP LOCKED, leased with a
-- fresh nonce until now + 60 s (queue.rs RESERVE_SQL without the
-- dead-letter branch). Wrapped so that it always returns one row: a
-- reserve can find nothing (with 8 clients, the due rows in its snapshot
-- may all be locked by other reservers), and \gset aborts the client on
-- zero rows. Then r_id is NULL, the DELETE matches nothing, and the job
-- this transaction enqueued stays for a later cycle (pg_ceiling.sh counts
-- completed cycles from the table, not from pgbench's transactions).
WITH r AS (
    UPDATE queue_jobs
    SET attempts = attempts + 1, lease_nonce = uuid_send(gen_random_uuid()),
        run_at = now() + interval '60 seconds'
    WHERE id = (SELECT id FROM queue_jobs
                WHERE queue = 'bench' AND state = 'ready' AND run_at <= now()
                ORDER BY run_at LIMIT 1
                FOR UPDATE SKIP LOCKED)
    RETURNING id, lease_nonce, payload, attempts, max_attempts, enqueued_at, run_at
)
SELECT (SELECT id FROM r) AS r_id, (SELECT lease_nonce FROM r) AS r_nonce,
       (SELECT length(payload) FROM r) AS r_bytes
\gset

-- ack: DELETE under queue.rs's HELD condition (id, state, nonce, lease
-- not over).
DELETE FROM queue_jobs
WHERE id = :r_id AND state = 'ready' AND lease_nonce = :r_nonce AND run_at > now();
