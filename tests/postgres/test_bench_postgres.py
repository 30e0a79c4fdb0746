"""``segmentlog bench --postgres DSN`` measures the PostgreSQL backend beside segmentlog."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from segmentlog.bench import main

pytestmark = pytest.mark.postgres


def test_bench_postgres_group_reports_every_workload_and_leaves_no_schema(
    dsn: str, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    rc = main(["--tiny", "--only", "postgres", "--postgres", dsn, "--quiet", "--json", str(out)])
    assert rc == 0
    results = json.loads(out.read_text())
    rows = {w["id"]: w for w in results["workloads"]}
    assert set(rows) == {"pg_append", "pg_append_batch", "pg_replay"}
    for row in rows.values():
        assert row["segmentlog"]["median"] > 0
        (baseline,) = row["baselines"]
        assert baseline["id"] == "postgres" and baseline["median"] > 0
        assert baseline["ratio"] > 0
    with psycopg.connect(dsn) as conn:
        left = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_%'"
        ).fetchall()
    assert left == []
