-- The archive of finished requests: one row per request, written once by the archiver.
--
-- Hash-partitioned by user_id (16 partitions): the history page always asks for one
-- person's rows, so it reads one partition; the primary key has to include the
-- partition key, and (user_id, hash) is what makes a re-delivered record a
-- no-op: it refuses the archiver's COPY, and the archiver's fallback
-- INSERT … ON CONFLICT (user_id, hash) DO UPDATE keeps the newer outcome.
CREATE TABLE history (
    user_id       text        NOT NULL,
    hash          text        NOT NULL,
    service_slug  text        NOT NULL,
    status        text        NOT NULL CHECK (status IN ('completed', 'failed', 'cancelled')),
    created_at    timestamptz NOT NULL,
    started_at    timestamptz,
    finished_at   timestamptz NOT NULL,
    -- seconds of work: finished - started - time spent waiting for the person (the OTP);
    -- what estimated_duration predicts. NULL when the request never started.
    duration      double precision CHECK (duration >= 0),
    -- seconds spent waiting for the person
    waited        double precision NOT NULL DEFAULT 0,
    -- {step: seconds spent in it}, wall clock (jsonb keeps no key order: pages order steps by the catalog)
    steps         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    attempts      smallint    NOT NULL DEFAULT 1,
    error         text,
    request_data  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    result_data   jsonb,
    archived_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, hash)
) PARTITION BY HASH (user_id);

DO $$
BEGIN
    FOR i IN 0..15 LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF history FOR VALUES WITH (MODULUS 16, REMAINDER %s)',
            'history_p' || lpad(i::text, 2, '0'), i);
    END LOOP;
END
$$;

-- Every index costs each archived row a few microseconds, so there are only these three
-- (besides the primary key). They are ascending although pages read newest first: a
-- backward scan costs nothing, and new rows then land at the right edge of the time
-- order, the cheapest place to insert into a B-tree.
--
-- The history page: one person's rows, newest first, keyset on (finished_at, hash). Service
-- and status filters walk the same index within that person's rows (a person has hundreds
-- of requests, not millions), so they need no index of their own.
CREATE INDEX history_user_finished ON history (user_id, finished_at, hash);

-- Statistics ("how often does this service fail", durations over time) and learned
-- estimates (the last N completed runs of a service): per service by time, with the
-- columns they read, so both are index-only scans.
CREATE INDEX history_service_finished ON history (service_slug, finished_at) INCLUDE (status, duration);

-- Retention: rows past the cut-off across every user (partitions are by user, not time).
-- Rows arrive in finish order, so a BRIN index finds the old ones for almost nothing.
CREATE INDEX history_finished ON history USING brin (finished_at);
