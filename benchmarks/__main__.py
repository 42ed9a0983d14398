"""Run every benchmark side by side with its anchors and print one table.

``python -m benchmarks`` runs the full set (a few minutes); ``--quick`` is the
smoke run that ``.ci/run`` executes so the scripts cannot rot. Each benchmark
module exposes ``run(quick: bool) -> list[dict]``; a row has ``benchmark``,
``case``, ``value``, ``unit``, and optionally ``ratio``, ``anchor``, ``target``
and ``met``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from benchmarks._report import table

MODULES = (
    "bench_verify",
    "bench_outbound",
    "bench_middleware",
    "bench_django",
    "bench_grpc",
    "bench_aiohttp",
    "bench_import",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("only", nargs="*", help=f"run only these of {', '.join(MODULES)}")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for name in args.only or MODULES:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows.extend(module.run(quick=args.quick))
    print(table(rows))
    missed = [row for row in rows if row.get("met") is False]
    if missed and not args.quick:
        print(f"\n{len(missed)} target(s) not met", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
