"""``python -m bench.shapes`` as the README runs it, at tiny sizes: every shipped shape and
a shape of one's own, the floors checked against the audit, the page written."""

import json
import os
import subprocess
import sys

from tests.helpers import ROOT, libpq_url


def test_the_bench_runs_on_every_shape(pg_server, tmp_path):
    env = {**os.environ, "DATABASE_URL": libpq_url(pg_server.admin_url)}
    shapes = "default,dense,fresh,mine:courses_per_student=2,enrolled_active_pct=40"
    sizes = ["--sizes", "3000,6000", "--runs", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.shapes", "--shapes", shapes, *sizes, "--results", tmp_path],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (results,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert [s["shape"]["name"] for s in results["shapes"]] == ["default", "dense", "fresh", "mine"]
    mine = results["shapes"][-1]["shape"]
    assert mine["courses_per_student"] == 2 and mine["enrolled_active_pct"] == 40
    for shape in results["shapes"]:
        small, large = shape["sizes"]
        # Sizes are the students' memberships; teachers' and anomalies' come on top.
        assert 3_000 <= small["memberships"] < large["memberships"]
        assert large["memberships"] - small["memberships"] >= 2_500
        assert set(small["steps"]) >= {"floor_audit", "floor_audit_a4", "audit", "gate"}
        assert "Nested Loop" not in large["explain"] and "explain" not in small
    page = (tmp_path / "benchmarks.md").read_text()
    assert page.count("| mine |") == 2 and ("MISSED" in page or "met" in page)
    # Nothing left behind on the server (without --keep-data).
    psql = [str(pg_server.bin_dir / "psql"), "-d", libpq_url(pg_server.admin_url), "-Atc"]
    listed = subprocess.run(
        [*psql, "SELECT datname FROM pg_database"], capture_output=True, text=True
    ).stdout.split()
    assert not [name for name in listed if name.endswith(("_3000", "_6000", "_0"))]
