-- hems-receiver schema, version 1: what the reference receiver stores in PostgreSQL.
-- Applied by agent/receiver_db.py at start, under an advisory lock, in one transaction,
-- together with its row in schema_version. Never edit a released file: add the next one.

-- One row per accepted envelope, whatever its kind: the fleet-wide replay key. It is
-- inserted (ON CONFLICT DO NOTHING) in the same transaction as the envelope's content, so a
-- (site, seq) is marked seen only if its content was stored, and stored at most once.
CREATE TABLE seen_envelope (
    site        text        NOT NULL,
    seq         bigint      NOT NULL,
    kind        text        NOT NULL,
    purpose     text        NOT NULL,
    received_by text        NOT NULL,            -- MQTT client id of the receiver process
    stored_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (site, seq)
);

-- Releases (kind data): one row per envelope, partitioned by month of window_start (UTC).
-- Monthly partitions are created on demand by hems_ensure_month(); the default partition
-- only catches what arrives before its month exists and should stay empty.
CREATE TABLE release (
    site          text        NOT NULL,
    seq           bigint      NOT NULL,
    purpose       text        NOT NULL,
    tier          text        NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    created       timestamptz NOT NULL,           -- when the gateway sealed it
    catalogue     text        NOT NULL,
    consent_id    text        NOT NULL,
    consent_hash  text        NOT NULL,
    recipient_key text        NOT NULL,
    device_key    text        NOT NULL,
    stored_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (site, seq, window_start)
) PARTITION BY RANGE (window_start);
CREATE INDEX release_site_purpose_window ON release (site, purpose, window_start);
CREATE INDEX release_purpose_window ON release (purpose, window_start);
CREATE TABLE release_default PARTITION OF release DEFAULT;

-- The records of each release: one row per point, the point's values as JSON
-- (e.g. {"mean": 1003.0, "max": 2001.0} or {"delta": 0.42}).
CREATE TABLE release_record (
    site         text        NOT NULL,
    seq          bigint      NOT NULL,
    ordinal      integer     NOT NULL,
    purpose      text        NOT NULL,
    window_start timestamptz NOT NULL,
    point        text        NOT NULL,
    "values"     jsonb       NOT NULL,
    PRIMARY KEY (site, seq, ordinal, window_start)
) PARTITION BY RANGE (window_start);
-- No index of its own beyond the key: queries find releases by site, purpose and window in
-- `release` and join on (site, seq, window_start), the key's prefix (it would add ~30% here).
CREATE TABLE release_record_default PARTITION OF release_record DEFAULT;

-- Events (kind event): kept whole, by site and purpose.
CREATE TABLE event_notice (
    site       text        NOT NULL,
    seq        bigint      NOT NULL,
    purpose    text        NOT NULL,
    created    timestamptz NOT NULL,
    body       jsonb       NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (site, seq)
);

-- Consent changes (kind consent): the household's signed consent record as the gateway sent it.
CREATE TABLE consent_notice (
    site        text        NOT NULL,
    seq         bigint      NOT NULL,
    purpose     text        NOT NULL,
    event       text,
    tier        text,
    record_id   text,
    changed_at  text,                             -- the record's own timestamp (ISO 8601)
    created     timestamptz NOT NULL,
    body        jsonb       NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (site, seq)
);
CREATE INDEX consent_notice_site ON consent_notice (site, stored_at);

-- Deletion requests (kind deletion): the backend acts on them and records that it did.
CREATE TABLE deletion_request (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site         text        NOT NULL,
    seq          bigint      NOT NULL,
    requested_at text,                            -- the request's own timestamp (ISO 8601)
    scope        text,
    created      timestamptz NOT NULL,
    body         jsonb       NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    state        text        NOT NULL DEFAULT 'received' CHECK (state IN ('received', 'acted')),
    acted_at     timestamptz,
    acted_by     text,
    note         text,
    UNIQUE (site, seq),
    CHECK ((state = 'acted') = (acted_at IS NOT NULL AND acted_by IS NOT NULL))
);
CREATE INDEX deletion_request_open ON deletion_request (stored_at) WHERE state = 'received';

-- Create the monthly partitions (UTC) of release and release_record holding moment `at`.
-- Idempotent; serialised by a transaction-level advisory lock so concurrent receivers do not
-- race. Rows already in a default partition for that month are moved into the new one.
CREATE FUNCTION hems_ensure_month(at timestamptz) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    low  timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    high timestamptz := low + interval '1 month';
    tag  text := to_char(low AT TIME ZONE 'UTC', '"y"YYYY"m"MM');
    parent text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('hems_ensure_month'));
    FOREACH parent IN ARRAY ARRAY['release', 'release_record'] LOOP
        IF to_regclass(format('%I_%s', parent, tag)) IS NULL THEN
            EXECUTE format('CREATE TEMP TABLE hems_moving (LIKE %I) ON COMMIT DROP', parent);
            EXECUTE format('WITH moved AS (DELETE FROM %I WHERE window_start >= %L '
                           'AND window_start < %L RETURNING *) '
                           'INSERT INTO hems_moving SELECT * FROM moved',
                           parent || '_default', low, high);
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                           parent || '_' || tag, parent, low, high);
            EXECUTE format('INSERT INTO %I SELECT * FROM hems_moving', parent);
            DROP TABLE hems_moving;
        END IF;
    END LOOP;
END $$;
