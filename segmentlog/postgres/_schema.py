"""The SQL: the tables, the append function, and every statement the stores send.

Strategy and invariants
- Two tables and one function in one schema, created only by ``create_schema()`` (or by
  running ``schema_sql()`` from a migration), never at import:
  ``segmentlog_runs(run_id PK, last_seq, session_id, terminal_seq)`` and
  ``segmentlog_events(run_id, seq, event_id, session_id, emitted_at, event, key)`` keyed by
  ``(run_id, seq)``, unique on ``(run_id, key)``. Both keys start with run_id, so Citus can
  distribute and co-locate both tables by run_id. ``key`` is NULL for an event appended
  without an idempotency key (NULLs never collide under the unique constraint).
- ``event`` holds the msgpack-encoded event alone; the envelope's other fields are columns.
  Storing the whole encoded envelope was rejected: its bytes contain the seq, so the client
  would need the seq before sending the row, and the run's row lock would then be held across
  a client round trip.
- ``segmentlog_append`` does a whole append of one run as one statement, so an append is one
  round trip and no lock is ever held while waiting on a client. Seqs come from the run's row
  (``last_seq = last_seq + n`` under its row lock; never ``MAX(seq) + 1``), so appenders in
  any process are serialised per run and a rolled-back append takes its seqs with it.
  (psycopg's pipeline mode would also give one round trip, but measured several times
  slower per call than a single statement.)
- Idempotency keys and ``expected_seq`` are checked inside the function, after it has locked
  the run's row and before it reserves any seq, so concurrent retries of one key queue on
  that lock and the second sees the first's row. The function answers with one of three
  outcomes: ``appended`` (the new last seq and the session in force before), ``held`` (the
  stored rows of the keys the run already holds; nothing written), ``seq_conflict`` (the
  run's last seq; nothing written). Conflicts come back as rows, not errors, so the stored
  envelopes arrive in the same round trip and a routine conflict logs no server ERROR.
- Upgrading: the DDL is idempotent and also upgrades a schema made by segmentlog 0.1 (no
  ``key`` column, a six-argument function). It adds the column and the constraint only when
  missing (so an up-to-date schema takes no table lock) and creates the eight-argument
  function beside the old one, which stays so that 0.1 clients keep appending during a
  rolling upgrade; drop it once none is left.
"""

from __future__ import annotations

import uuid

from psycopg import sql

__all__ = [
    "APPEND_FUNCTION",
    "EVENTS_TABLE",
    "KEY_CONSTRAINT",
    "RUNS_TABLE",
    "SETTLE_LOCK_TIMEOUT_MS",
    "Statements",
    "channel_of",
    "listen_statement",
    "schema_sql",
]

RUNS_TABLE = "segmentlog_runs"
EVENTS_TABLE = "segmentlog_events"
APPEND_FUNCTION = "segmentlog_append"
#: The unique constraint on ``(run_id, key)``.
KEY_CONSTRAINT = "segmentlog_events_run_key"
#: How long (ms) to wait for the row lock of a transaction whose connection died mid-flight.
SETTLE_LOCK_TIMEOUT_MS = 10_000

_DDL = """\
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
    key        text,
    PRIMARY KEY (run_id, seq),
    CONSTRAINT {key_constraint} UNIQUE (run_id, key)
);
DO $upgrade$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = {events_name}::regclass AND attname = 'key'
                   AND NOT attisdropped) THEN
        ALTER TABLE {events} ADD COLUMN key text;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = {events_name}::regclass
                   AND conname = {key_constraint_name}) THEN
        ALTER TABLE {events} ADD CONSTRAINT {key_constraint} UNIQUE (run_id, key);
    END IF;
END
$upgrade$;
COMMENT ON COLUMN {events}.event IS
    'the event, msgpack-encoded by msgspec (uuids as 16 bytes), as in segmentlog frames';
COMMENT ON COLUMN {events}.key IS
    'the idempotency key the event was appended with (unique per run), or NULL';
CREATE OR REPLACE FUNCTION {append}(
    p_run_id uuid,
    p_event_ids uuid[],
    p_sessions uuid[],
    p_emitted_at timestamptz[],
    p_events bytea[],
    p_terminal_back integer,
    p_keys text[],
    p_expected_seq bigint
) RETURNS TABLE (
    o_outcome text,
    o_last_seq bigint,
    o_session_id uuid,
    o_seq bigint,
    o_event_id uuid,
    o_event_session_id uuid,
    o_emitted_at timestamp,
    o_event bytea,
    o_key text
)
LANGUAGE plpgsql AS $fn$
DECLARE
    n integer := cardinality(p_events);
    v_last bigint;
    v_session uuid;
    v_key text;
    v_held boolean := false;
BEGIN
    IF p_keys IS NOT NULL OR p_expected_seq IS NOT NULL THEN
        -- Lock the run's row before checking anything, and reserve nothing yet. A run that
        -- must exist (expected_seq > 0) is only locked, so a conflict creates no row;
        -- otherwise the row is created if missing, so that first appends queue on it too.
        IF p_expected_seq > 0 THEN
            SELECT r.last_seq INTO v_last FROM {runs} AS r WHERE r.run_id = p_run_id
            FOR UPDATE;
            v_last := COALESCE(v_last, 0);
        ELSE
            INSERT INTO {runs} AS r (run_id, last_seq) VALUES (p_run_id, 0)
            ON CONFLICT (run_id) DO UPDATE SET last_seq = r.last_seq
            RETURNING r.last_seq INTO v_last;
        END IF;
        -- Keys first: any key the run holds means nothing is written. One probe per key,
        -- by equality on both columns of the unique index: rejected, one lookup with
        -- key = ANY(p_keys), whose plan cached while the table was small scanned every
        -- event of the run, so keyed appends slowed down as the run grew.
        IF p_keys IS NOT NULL THEN
            FOREACH v_key IN ARRAY p_keys LOOP
                CONTINUE WHEN v_key IS NULL;
                RETURN QUERY
                    SELECT 'held', NULL::bigint, NULL::uuid, e.seq, e.event_id, e.session_id,
                           e.emitted_at AT TIME ZONE 'UTC', e.event, e.key
                    FROM {events} AS e
                    WHERE e.run_id = p_run_id AND e.key = v_key;
                v_held := v_held OR FOUND;
            END LOOP;
            IF v_held THEN
                RETURN;
            END IF;
        END IF;
        IF p_expected_seq IS NOT NULL AND p_expected_seq <> v_last THEN
            RETURN QUERY SELECT 'seq_conflict', v_last, NULL::uuid, NULL::bigint, NULL::uuid,
                                NULL::uuid, NULL::timestamp, NULL::bytea, NULL::text;
            RETURN;
        END IF;
    END IF;
    -- Reserve n seqs and row-lock the run; session_id is left alone here, so this returns
    -- the session in force before the append.
    INSERT INTO {runs} AS r (run_id, last_seq) VALUES (p_run_id, n)
    ON CONFLICT (run_id) DO UPDATE SET last_seq = r.last_seq + EXCLUDED.last_seq
    RETURNING r.last_seq, r.session_id INTO v_last, v_session;
    INSERT INTO {events} (run_id, seq, event_id, session_id, emitted_at, event, key)
    SELECT p_run_id, v_last - n + u.ord, u.event_id, COALESCE(u.session_id, v_session),
           u.emitted_at, u.event, p_keys[u.ord]
    FROM unnest(p_event_ids, p_sessions, p_emitted_at, p_events)
         WITH ORDINALITY AS u(event_id, session_id, emitted_at, event, ord);
    IF p_sessions[n] IS NOT NULL OR p_terminal_back IS NOT NULL THEN
        UPDATE {runs} AS r
        SET session_id = COALESCE(p_sessions[n], r.session_id),
            terminal_seq = COALESCE(r.terminal_seq, v_last - p_terminal_back)
        WHERE r.run_id = p_run_id;
    END IF;
    PERFORM pg_notify('segmentlog_' || replace(p_run_id::text, '-', ''), '');
    RETURN QUERY SELECT 'appended', v_last, v_session, NULL::bigint, NULL::uuid, NULL::uuid,
                        NULL::timestamp, NULL::bytea, NULL::text;
END
$fn$;
"""

#: The columns an Envelope is rebuilt from, in ``RowCodec.to_envelopes`` order.
_ENVELOPE_COLUMNS = "seq, event_id, session_id, emitted_at AT TIME ZONE 'UTC', event, key"


def schema_sql(schema: str = "public") -> str:
    """The idempotent DDL that ``create_schema()`` runs, for use in a migration tool.

    It creates what is missing and upgrades a schema made by an earlier segmentlog.
    """
    return Statements(schema).ddl.as_string(None)


def channel_of(run_id: uuid.UUID) -> str:
    """The NOTIFY channel a run's commits are announced on."""
    return f"segmentlog_{run_id.hex}"


def listen_statement(channel: str) -> sql.Composed:
    """``LISTEN`` on ``channel``."""
    return sql.SQL("LISTEN {}").format(sql.Identifier(channel))


class Statements:
    """Every statement the stores send, composed once for one schema."""

    def __init__(self, schema: str) -> None:
        if not isinstance(schema, str) or not schema:
            raise ValueError(f"schema must be a non-empty string, got {schema!r}")
        events = sql.Identifier(schema, EVENTS_TABLE)
        names = {
            "schema": sql.Identifier(schema),
            "runs": sql.Identifier(schema, RUNS_TABLE),
            "events": events,
            "events_name": sql.Literal(events.as_string(None)),
            "key_constraint": sql.Identifier(KEY_CONSTRAINT),
            "key_constraint_name": sql.Literal(KEY_CONSTRAINT),
            "append": sql.Identifier(schema, APPEND_FUNCTION),
            "columns": sql.SQL(_ENVELOPE_COLUMNS),
        }

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(**names)

        self.schema = schema
        self.ddl = q(_DDL)
        self.ddl_lock = sql.SQL("SELECT pg_advisory_xact_lock(hashtext({}))").format(
            sql.Literal("segmentlog.create_schema:" + schema)
        )
        self.append = q(
            "SELECT * FROM {append}(%s, %s::uuid[], %s::uuid[], %s::timestamptz[], "
            "%s::bytea[], %s::integer, %s::text[], %s::bigint)"
        )
        self.page = q(
            "SELECT {columns} FROM {events} WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT %s"
        )
        self.run_exists = q("SELECT 1 FROM {runs} WHERE run_id = %s")
        self.last_seq = q("SELECT last_seq FROM {runs} WHERE run_id = %s")
        self.terminal_seq = q("SELECT terminal_seq FROM {runs} WHERE run_id = %s")
        self.runs = q("SELECT run_id FROM {runs} ORDER BY run_id")
        self.settle_timeout = sql.SQL("SET LOCAL lock_timeout = {}").format(
            sql.Literal(f"{SETTLE_LOCK_TIMEOUT_MS}ms")
        )
        # A dead transaction that created the run blocks this insert until it is gone; one
        # that updated the row blocks the FOR UPDATE. Either way, what follows is final.
        self.settle_wait_insert = q(
            "INSERT INTO {runs} (run_id, last_seq) VALUES (%s, 0) ON CONFLICT DO NOTHING"
        )
        self.settle_wait_lock = q("SELECT 1 FROM {runs} WHERE run_id = %s FOR UPDATE")
        self.settle_find = q(
            "SELECT {columns} FROM {events} WHERE run_id = %s AND event_id = ANY(%s) ORDER BY seq"
        )
