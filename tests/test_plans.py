"""The counting statement's plan (the audit, the dry run, the gate) cannot flip on an
estimate: on generated data of every bench shape, with fresh statistics, the pairs are
joined to ``course_enrollments`` by hash, never by a nested loop of index scans."""

import re

import pytest
from sqlalchemy import event, text

from bench.generate import SHAPES, generate
from enrollments_phase1 import coverage
from enrollments_phase1.migrations.shared.v4 import gate
from enrollments_phase1.names import Tables

STUDENTS = 3_000


@pytest.fixture(params=sorted(SHAPES))
def generated(request, legacy):
    shape = SHAPES[request.param]
    with legacy.begin() as conn:
        generate(conn, STUDENTS, shape)
    with legacy.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    return legacy


def assert_hash_joins(plan: str) -> None:
    # course_enrollments read in one pass (a hash, or a merge in the index's order), not
    # looked up pair by pair.
    assert "Nested Loop" not in plan, plan
    assert re.search(r"(Hash|Merge) Left Join", plan), plan


def test_the_audit_counts_with_a_pinned_plan(generated):
    # The statement the audit runs, explained in its own transaction at the moment it
    # runs: what the server plans for it, with the settings then in force.
    plans = []
    with generated.connect() as conn:
        raw = conn.connection.dbapi_connection

        def explain(_conn, _cursor, statement, *_):
            if "AS per_part" in statement:
                with raw.cursor() as cur:
                    cur.execute("EXPLAIN " + statement)
                    plans.append("\n".join(r[0] for r in cur.fetchall()))
                    cur.execute("SHOW enable_nestloop")
                    plans.append(cur.fetchone()[0])

        event.listen(conn, "before_cursor_execute", explain)
        report = coverage.audit(conn, limit=3, by="course")
        after = conn.execute(text("SHOW enable_nestloop")).scalar_one()
    assert report.active_memberships > STUDENTS
    plan, during = plans
    assert_hash_joins(plan)
    assert during == "off" and after == "on"  # pinned for the counting statement alone


def test_the_gate_counts_with_a_pinned_plan(generated):
    t = Tables("public")
    # The EXECUTE's parameters as values: its one-off plan is made with them.
    with generated.connect() as conn:
        lo, hi = conn.execute(text("SELECT min(id), max(id) FROM users")).one()
    sql = gate.counts_sql(t, str(lo), "512", str(lo + (hi - lo + 1) // 2))
    block = gate.gate_sql(t, "0007", "abort")
    # The block sets the counting statement's settings right before it, and puts them back.
    before_loop = block[: block.index("EXECUTE $counts$")]
    for name, value in gate.COUNTING_SETTINGS.items():
        assert f"pg_catalog.set_config('{name}', '{value}', true)" in before_loop
    assert "settings_before[1]" in block[block.index("EXECUTE $counts$") :]
    with generated.begin() as conn:
        for name, value in gate.COUNTING_SETTINGS.items():
            conn.execute(
                text("SELECT pg_catalog.set_config(:n, :v, true)"), {"n": name, "v": value}
            )
        plan = "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + sql)))
    assert_hash_joins(plan)


def test_the_gate_puts_the_settings_back(generated):
    with generated.begin() as conn:
        conn.execute(text("SET LOCAL work_mem = '7MB'"))
        conn.execute(text(gate.gate_sql(Tables("public"), "0007", "warn")))
        settings = conn.execute(
            text("SELECT current_setting('work_mem'), current_setting('enable_nestloop')")
        ).one()
    assert tuple(settings) == ("7MB", "on")
