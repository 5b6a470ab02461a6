"""The live definition (enrollments_phase1.coverage, what the commands use) and the newest
revision's gate agree.

The gate is found from the revisions themselves: the newest revision whose module calls
``require_full_coverage``; its helper version's gate is run online and as the psql block
the offline script carries, on generated legacy data with every kind of pair.
"""

from __future__ import annotations

import importlib
import json
import logging

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text

from bench.generate import generate
from enrollments_phase1.names import Tables
from tests.helpers import ROOT, enrollments, psql


def newest_gate_module():
    """(revision, gate module) of the newest revision that runs a gate: the ``gate``
    module of the helper version it imports."""
    script = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
    for rev in script.walk_revisions():  # head first
        for value in vars(rev.module).values():
            module = getattr(value, "__module__", "") or ""
            if callable(value) and module.startswith("enrollments_phase1.migrations.shared.v"):
                version = ".".join(module.split(".")[:4])  # enrollments_phase1.migrations.shared.vN
                try:
                    gate = importlib.import_module(f"{version}.gate")
                except ModuleNotFoundError:
                    continue
                if hasattr(gate, "gate_sql") and hasattr(gate, "check_coverage"):
                    return rev.revision, gate
    raise AssertionError("no revision runs a coverage gate")


@pytest.fixture
def varied(legacy):
    with legacy.begin() as conn:
        generate(conn, 400)  # missing, inactive, NULL and false memberships, anomalies
        conn.execute(text("UPDATE users SET role = 'admin' WHERE id % 97 = 0"))
    return legacy


def cli_counts(database_url) -> dict:
    data = json.loads(enrollments(database_url, "audit", "--json").stdout)
    return {k: data[k] for k in ("eligible_pairs", "covered", "missing", "inactive")} | {
        "anomalies": data["anomalies"]
    }


def expected_lines(counts: dict) -> list[str]:
    """What the gate says of ``counts``, as the CLI counted them."""
    anomalies = counts["anomalies"]
    return [
        f"{counts['covered']:,} of {counts['eligible_pairs']:,} eligible (student, course) pairs"
        f" have an active enrollment; {counts['missing']:,} missing,"
        f" {counts['inactive']:,} inactive",
        f"{anomalies['non_student']:,} non_student and {anomalies['cross_school']:,} cross_school",
    ]


def test_cli_and_the_newest_gate_online_count_the_same(database_url, varied, caplog):
    revision, gate = newest_gate_module()
    expected = cli_counts(database_url)
    assert expected["missing"] and expected["inactive"]  # the data has gaps of both kinds
    with varied.connect() as conn, caplog.at_level(logging.INFO, logger="migrations"):
        gate.check_coverage(conn, revision, "warn")
    for line in expected_lines(expected):
        assert line in caplog.text


def test_cli_and_the_newest_gate_offline_count_the_same(pg_server, database_url, varied):
    revision, gate = newest_gate_module()
    expected = cli_counts(database_url)
    result = psql(pg_server, database_url, gate.gate_sql(Tables("public"), revision, "warn") + ";")
    assert result.returncode == 0, result.stderr
    for line in expected_lines(expected):
        assert line in result.stderr
