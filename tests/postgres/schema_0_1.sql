-- The schema segmentlog 0.1 created (segmentlog/postgres.py before the key column),
-- kept verbatim so that tests can check create_schema() upgrades it. Placeholders are
-- psycopg.sql identifiers: {schema}, {runs}, {events}, {append}.
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {runs} (
    run_id       uuid PRIMARY KEY,
    last_seq     bigint NOT NULL,
    session_id   uuid,
    terminal_seq bigint
);
CREATE TABLE IF NOT EXISTS {events} (
    run_id     uuid NOT NULL,
    seq        bigint NOT NULL,
    event_id   uuid NOT NULL,
    session_id uuid,
    emitted_at timestamptz NOT NULL,
    event      bytea NOT NULL,
    PRIMARY KEY (run_id, seq)
);
COMMENT ON COLUMN {events}.event IS
    'the event, msgpack-encoded by msgspec (uuids as 16 bytes), as in segmentlog frames';
CREATE OR REPLACE FUNCTION {append}(
    p_run_id uuid,
    p_event_ids uuid[],
    p_sessions uuid[],
    p_emitted_at timestamptz[],
    p_events bytea[],
    p_terminal_back integer
) RETURNS TABLE (o_last_seq bigint, o_session_id uuid)
LANGUAGE plpgsql AS $fn$
DECLARE
    n integer := cardinality(p_events);
    v_last bigint;
    v_session uuid;
BEGIN
    -- Reserve n seqs and row-lock the run; session_id is left alone here, so this returns
    -- the session in force before the append.
    INSERT INTO {runs} AS r (run_id, last_seq) VALUES (p_run_id, n)
    ON CONFLICT (run_id) DO UPDATE SET last_seq = r.last_seq + EXCLUDED.last_seq
    RETURNING r.last_seq, r.session_id INTO v_last, v_session;
    INSERT INTO {events} (run_id, seq, event_id, session_id, emitted_at, event)
    SELECT p_run_id, v_last - n + u.ord, u.event_id, COALESCE(u.session_id, v_session),
           u.emitted_at, u.event
    FROM unnest(p_event_ids, p_sessions, p_emitted_at, p_events)
         WITH ORDINALITY AS u(event_id, session_id, emitted_at, event, ord);
    IF p_sessions[n] IS NOT NULL OR p_terminal_back IS NOT NULL THEN
        UPDATE {runs} AS r
        SET session_id = COALESCE(p_sessions[n], r.session_id),
            terminal_seq = COALESCE(r.terminal_seq, v_last - p_terminal_back)
        WHERE r.run_id = p_run_id;
    END IF;
    PERFORM pg_notify('segmentlog_' || replace(p_run_id::text, '-', ''), '');
    RETURN QUERY SELECT v_last, v_session;
END
$fn$;
