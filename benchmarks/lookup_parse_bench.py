"""LookupEvents batches: would DuckDB parsing them cost less CPU than normalizing the SDK's dicts?

The LookupEvents SDK hands each page's events over already parsed (``dict`` s). Today's reader
re-encodes each one to JSON for the stored ``raw`` (``files.encoded_item``) and normalizes the
dict (``batches.to_batches``). A DuckDB-native path would keep the re-encoding and parse that text
again with the statements that parse a file's lines (``NativeReader.texts``) instead of
normalizing. This measures, in one process on the same N realistic events (the demo's, as the
SDK would hand them over), the CPU seconds per 1M events of:

* the re-encoding (paid by both paths),
* today's rest: ``to_batches`` over the encoded items (normalize, attribute) and ``Batch.seal``
  (the Arrow table the writer inserts),
* DuckDB's: ``NativeReader.texts`` over the same texts (parse, validate, type, attribute: the
  Arrow table the writer inserts), on a store's connection with one DuckDB thread, as ingest
  runs it.

Process CPU (``time.process_time``), each measured ``--repeat`` times, the minimum kept; batches of
10,000 events as the readers make them. Nothing is written to the store. Peak RSS is the whole
process's (the events held as dicts and texts included), with the load average before and after.

    .venv/bin/python benchmarks/lookup_parse_bench.py --events 200000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402

from models.inventory import Attributor  # noqa: E402
from pipeline.demo.synthetic import stream  # noqa: E402
from pipeline.ingest.batches import BATCH_SIZE, to_batches  # noqa: E402
from pipeline.ingest.native import LineOrigin, NativeReader  # noqa: E402
from pipeline.ingest.sources.files import Item, encoded_item  # noqa: E402
from pipeline.store.store import open_store  # noqa: E402


def _origin(items: list[Item]) -> LineOrigin:
    """Line ``n`` is ``items[n]``, already parsed (the SDK's dict)."""
    locations = pa.array([item.location for item in items], pa.string())
    return LineOrigin(lambda numbers: locations.take(numbers), lambda n, _text: (items[n],))


def _cpu(step: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        step()
        best = min(best, time.process_time() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    dicts = [json.loads(json.dumps(e)) for e in stream(args.events)]  # as the SDK hands them: plain dicts
    chunks = [dicts[i:i + BATCH_SIZE] for i in range(0, len(dicts), BATCH_SIZE)]
    attribute = Attributor(None)
    encoded = [[encoded_item(f"cn-hangzhou page 0 #{i}", ev) for i, ev in enumerate(chunk)] for chunk in chunks]

    def encode() -> None:
        for chunk in chunks:
            for i, ev in enumerate(chunk):
                encoded_item(f"cn-hangzhou page 0 #{i}", ev)

    def python() -> None:
        for items in encoded:
            for batch in to_batches(items, "history", "cn-hangzhou", attribute, len(items) + 1):
                batch.seal()

    with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "s.duckdb") as store:
        store.con.execute("SET threads = 1")
        reader = NativeReader(store.con, attribute)

        def duckdb() -> None:
            for items in encoded:
                batch = reader.texts([item.raw for item in items], _origin(items), "history", "cn-hangzhou")
                assert batch.count == len(items), "DuckDB left events to Python: not a like-for-like figure"

        figures = {name: _cpu(step, args.repeat) * 1_000_000 / args.events
                   for name, step in (("encode", encode), ("python", python), ("duckdb", duckdb))}
        reader.close()
    result = {"events": args.events, "cpu_s_per_1m_events": {k: round(v, 1) for k, v in figures.items()},
              "duckdb_vs_python_pct": round(100 * figures["duckdb"] / figures["python"], 1),
              "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              "load": [load_before, os.getloadavg()[0]]}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"LookupEvents batches, {args.events:,} demo events as the SDK hands them over (CPU s per 1M events, "
          f"min of {args.repeat}):")
    print(f"  re-encoding for raw (both paths)            {figures['encode']:6.1f}")
    print(f"  today: normalize + attribute + Arrow        {figures['python']:6.1f}")
    print(f"  DuckDB: NativeReader.texts of the same text {figures['duckdb']:6.1f}  "
          f"({result['duckdb_vs_python_pct']:.0f}% of today's)")
    print(f"  peak RSS {result['peak_rss_mib']:,} MiB; load average {result['load'][0]:.1f} before, "
          f"{result['load'][1]:.1f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
