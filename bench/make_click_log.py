"""A synthetic click log the size of YOOCHOOSE's (33 M clicks, 9 M sessions, 52 k items), never committed.

    python -m bench.make_click_log --out /tmp/clicks.csv            # the full size, ISO times as YOOCHOOSE's
    python -m bench.make_click_log --clicks 100000 --out small.parquet

``make bench-clicks`` makes it (once) and times reading it through ``data=clicks``. Shaped like the real log:
sessions start uniformly over ``--days`` days in id order (YOOCHOOSE's file is sorted by session, then time),
their lengths are geometric with YOOCHOOSE's mean (3.7 clicks), clicks follow each other by exponential gaps
(mean 60 s), and items are drawn from a Zipf-like popularity (exponent 0.9) over random 9-digit ids. Written in
chunks with pyarrow (CSV or Parquet by the file's suffix), so memory stays at one chunk.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

START = np.datetime64("2014-04-01T00:00:00", "ms").astype(np.int64)
CHUNK_SESSIONS = 1_000_000


def session_lengths(rng: np.random.Generator, clicks: int, sessions: int) -> np.ndarray:
    """Geometric lengths (>= 1) with mean clicks / sessions, adjusted to sum to exactly ``clicks``."""
    lengths = rng.geometric(sessions / clicks, size=sessions).astype(np.int64)
    excess = int(lengths.sum()) - clicks
    while excess != 0:  # spread the difference over random sessions, keeping every length >= 1
        pick = rng.integers(0, sessions, size=min(abs(excess), sessions))
        if excess > 0:
            pick = pick[lengths[pick] > 1]
            pick = np.unique(pick)[:excess]
            lengths[pick] -= 1
        else:
            pick = np.unique(pick)[: -excess]
            lengths[pick] += 1
        excess = int(lengths.sum()) - clicks
    return lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the file to write: .csv, .tsv or .parquet")
    parser.add_argument("--clicks", type=int, default=33_003_944)  # YOOCHOOSE's yoochoose-clicks.dat
    parser.add_argument("--sessions", type=int, default=9_249_729)
    parser.add_argument("--items", type=int, default=52_739)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--times", choices=("iso", "s", "ms"), default="iso", help="how times are written")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.time()
    rng = np.random.default_rng(args.seed)
    lengths = session_lengths(rng, args.clicks, args.sessions)
    starts = np.sort(rng.integers(0, args.days * 86_400_000, size=args.sessions)) + START
    item_ids = rng.choice(900_000_000, size=args.items, replace=False).astype(np.int64) + 100_000_000
    weights = 1.0 / np.arange(1, args.items + 1) ** 0.9
    cdf = np.cumsum(weights / weights.sum())
    out = Path(args.out)
    schema = pa.schema([("session_id", pa.int64()), ("item_id", pa.int64()),
                        ("timestamp", pa.string() if args.times == "iso" else pa.int64())])
    parquet = out.suffix == ".parquet"
    delimiter = "\t" if out.suffix == ".tsv" else ","
    if not parquet:  # a plain header, as log exports write it (pyarrow would quote the names)
        out.write_text(delimiter.join(schema.names) + "\n")
    sink = None if parquet else pa.OSFile(str(out), "ab")
    writer = (pq.ParquetWriter(out, schema) if parquet else
              pacsv.CSVWriter(sink, schema, write_options=pacsv.WriteOptions(
                  include_header=False, delimiter=delimiter, quoting_style="none")))
    with writer:
        for first in range(0, args.sessions, CHUNK_SESSIONS):
            n = lengths[first:first + CHUNK_SESSIONS]
            session = np.repeat(np.arange(first + 1, first + 1 + len(n), dtype=np.int64), n)
            gaps = rng.exponential(60_000, size=int(n.sum())).astype(np.int64)
            offsets = np.repeat(np.cumsum(n) - n, n)
            gaps[offsets] = 0  # a session's first click is at its start
            cum = np.cumsum(gaps)
            stamp = np.repeat(starts[first:first + len(n)], n) + cum - np.repeat(cum[offsets[np.cumsum(n) - 1]], n)
            items = item_ids[np.minimum(np.searchsorted(cdf, rng.random(len(session))), args.items - 1)]
            if args.times == "iso":
                ts = pa.array(stamp, type=pa.timestamp("ms", tz="UTC"))
                column = pc.strftime(ts, format="%Y-%m-%dT%H:%M:%SZ")
            else:
                column = pa.array(stamp if args.times == "ms" else stamp // 1000)
            writer.write_table(pa.table([pa.array(session), pa.array(items), column], schema=schema))
    if sink is not None:
        sink.close()
    print(f"wrote {out}: {args.clicks:,} clicks, {args.sessions:,} sessions, {args.items:,} items, "
          f"{out.stat().st_size / 2**20:,.0f} MiB in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
