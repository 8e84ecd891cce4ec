"""Run every benchmark behind docs/benchmarks.md, at full or small scale.

    python -m bench.run [--scale small] [--locomo path/to/locomo10.json]

Results go to reports/bench/*.json (not committed). The small scale runs
the same code on a few hundred requests and a few thousand memories, so the
scripts can be checked in minutes. Its figures are not the ones to report. The
comparison with mem0 runs only with ``--locomo``. Fault injection has its
own command (``python -m bench.faults``) because it starts its own servers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench import ingest, load, mem0_compare, promotion, search_scale
from bench.common import ServiceConfig, write_result

SCALES: dict[str, dict[str, Any]] = {
    "full": {
        "ingest_requests": 4000,
        "promotion_turns": 3000,
        "memories": [10_000, 100_000, 1_000_000],
        "queries": 300,
        "load_users": 16,
        "load_seconds": 60,
        "conversations": None,
    },
    "small": {
        "ingest_requests": 300,
        "promotion_turns": 200,
        "memories": [2_000],
        "queries": 20,
        "load_users": 4,
        "load_seconds": 10,
        "conversations": 1,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--locomo", type=Path, default=None, help="LoCoMo file for mem0 and texts.")
    arguments = parser.parse_args()
    scale = SCALES[arguments.scale]
    config = ServiceConfig()
    if arguments.locomo is not None:
        mem0_compare.require_mem0_python()  # before the other benchmarks, not after them

    def save(name: str, result: dict[str, Any]) -> None:
        result["scale"] = arguments.scale
        print(write_result(name, result))

    save("ingest", ingest.run(config, [1, 16, 64], scale["ingest_requests"], [1, 10]))
    save(
        "promotion",
        promotion.run(config, scale["promotion_turns"], arguments.locomo, timeout_s=1800),
    )
    scale_config = ServiceConfig(database_url=search_scale.DEFAULT_DATABASE_URL)
    save("search_scale", search_scale.run(scale_config, scale["memories"], scale["queries"]))
    save("load", load.run(config, scale["load_users"], scale["load_seconds"]))
    if arguments.locomo is not None:
        save("mem0_compare", mem0_compare.run(arguments.locomo, scale["conversations"], config))


if __name__ == "__main__":
    main()
