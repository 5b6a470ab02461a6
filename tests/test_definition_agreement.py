"""The live definition (app/, what the commands use) and the newest revision's gate agree.

The gate is found from the revisions themselves: the newest revision whose module calls
``require_full_coverage``; its helper version's gate is run online and as the psql block
the offline script carries, on generated legacy data with every kind of pair.
"""

from __future__ import annotations

import json
import logging
import re

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text

from bench.generate import generate
from tests.helpers import ROOT, enrollments, psql


def newest_gate_module():
    script = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
    for rev in script.walk_revisions():  # head first
        gate = getattr(rev.module, "require_full_coverage", None)
        if gate is not None:
            import importlib

            return rev.revision, importlib.import_module(gate.__module__)
    raise AssertionError("no revision calls require_full_coverage")


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


def test_cli_and_the_newest_gate_online_count_the_same(database_url, varied, caplog):
    revision, gate = newest_gate_module()
    expected = cli_counts(database_url)
    assert expected["missing"] and expected["inactive"]  # the data has gaps of both kinds
    with varied.connect() as conn, caplog.at_level(logging.WARNING, logger="migrations"):
        gate.check_coverage(conn, revision, "warn")
    said = caplog.text
    assert (
        f"{expected['covered']:,} of {expected['eligible_pairs']:,} eligible (student, course)"
        in said
    )
    assert f"{expected['missing']:,} missing, {expected['inactive']:,} inactive" in said
    anomalies = expected["anomalies"]
    assert (
        f"{anomalies['non_student']} non_student and {anomalies['cross_school']} cross_school"
        in (said)
    )


def test_cli_and_the_newest_gate_offline_count_the_same(pg_server, database_url, varied):
    revision, gate = newest_gate_module()
    expected = cli_counts(database_url)
    result = psql(pg_server, database_url, gate.gate_sql(revision, "warn") + ";")
    assert result.returncode == 0, result.stderr
    uncovered = expected["eligible_pairs"] - expected["covered"]
    match = re.search(
        r"(\d+) of (\d+) eligible pairs lack an active enrollment"
        r" \((\d+) missing, (\d+) inactive\)",
        result.stderr,
    )
    assert match, result.stderr
    assert [int(g) for g in match.groups()] == [
        uncovered,
        expected["eligible_pairs"],
        expected["missing"],
        expected["inactive"],
    ]
    anomalies = expected["anomalies"]
    assert (
        f"{anomalies['non_student']} non_student and {anomalies['cross_school']} cross_school"
        in (result.stderr)
    )
