"""Pandas-style ETL over CSV objects in a bucket, every partition read and written inside functions.

The data-processing case of the seed talk, with Dask DataFrame code: ``dask_faas.dataframe.read_csv``
plans byte ranges of the objects on the client (listing and headers only), and each range is read,
filtered and transformed by the function that runs its task. The cleaned rows are written back as
Parquet objects (or CSV), one per partition, and a per-city summary (a groupby-aggregate whose
shuffle goes through storage) is written as one CSV object. Only the summary reaches the client.

Unless ``--input`` names existing data, the script first writes a small dataset of taxi trips
(``--objects`` CSV objects of ``--rows`` rows) into the executor's storage, and checks the summary
against pandas at the end (exit code 1 on a mismatch). What it created is deleted unless ``--keep``.

Run it on the embedded default (local function pool, local storage directory)::

    python examples/etl_csv.py
    python examples/etl_csv.py --objects 8 --rows 200_000 --blocksize 4MB --format csv

or against any S3-compatible endpoint (AWS, IBM COS, Ceph, MinIO; credentials from the usual
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` variables or the ``faas.s3`` settings)::

    python examples/etl_csv.py --endpoint-url http://127.0.0.1:9000 --bucket my-bucket
    DASK_FAAS__STORAGE=s3 DASK_FAAS__S3__BUCKET=my-bucket python examples/etl_csv.py
    python examples/etl_csv.py --bucket my-bucket --input 's3://my-bucket/trips/*.csv'
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import uuid

import dask
import numpy as np
import pandas as pd

import dask_faas
from dask_faas import FaasExecutor
from dask_faas import dataframe as fd

CITIES = ["Barcelona", "Berlin", "Haifa", "New York", "Tarragona", "Zurich"]


def make_trips(seed: int, rows: int) -> pd.DataFrame:
    """Taxi trips, with a few bad rows (zero distance, negative fares) for the filter to drop."""
    rng = np.random.default_rng(seed)
    distance = rng.gamma(2.0, 3.0, rows).round(2)
    distance[rng.random(rows) < 0.02] = 0.0
    fare = (3.0 + 1.7 * distance + rng.normal(0, 2.0, rows)).round(2)
    start = pd.Timestamp("2019-01-01") + pd.to_timedelta(rng.integers(0, 365 * 24 * 3600, rows), unit="s")
    return pd.DataFrame(
        {
            "pickup": start.strftime("%Y-%m-%d %H:%M:%S"),
            "city": rng.choice(CITIES, rows),
            "passengers": rng.integers(1, 5, rows),
            "distance_km": distance,
            "fare": fare,
        }
    )


def transform(df: pd.DataFrame) -> pd.DataFrame:
    """The ETL step, the same for pandas and Dask: drop bad rows, derive columns."""
    df = df[(df.distance_km > 0) & (df.fare > 0)]
    return df.assign(fare_per_km=df.fare / df.distance_km, month=df.pickup.dt.month)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    return df.groupby("city").agg(
        trips=("fare", "count"), revenue=("fare", "sum"), fare_per_km=("fare_per_km", "mean")
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="ETL over CSV objects: read, filter, derive, aggregate, write back, in functions.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--input", help="existing CSV data: URL, prefix or glob (default: make a dataset)")
    parser.add_argument("--output", help="URL prefix for the results (default: beside the input)")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint: use S3 storage (with --bucket)")
    parser.add_argument("--bucket", help="S3 bucket of the job and of the generated data")
    parser.add_argument("--objects", type=int, default=4, help="objects of the generated dataset")
    parser.add_argument("--rows", type=int, default=50_000, help="rows per generated object")
    parser.add_argument("--blocksize", default="1MB", help="bytes per partition")
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet", help="of the rows")
    parser.add_argument("--workers", type=int, default=None, help="local pool size (default: CPU count)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data and the results")
    args = parser.parse_args(argv)
    if args.endpoint_url and not args.bucket:
        parser.error("--endpoint-url needs --bucket")
    if args.objects < 1 or args.rows < 10:
        parser.error("need --objects >= 1 and --rows >= 10")
    return args


def executor_for(args: argparse.Namespace) -> FaasExecutor:
    settings: dict = {} if args.workers is None else {"workers": args.workers}
    if args.bucket:
        s3 = {"bucket": args.bucket, "endpoint_url": args.endpoint_url}
        settings.update(storage="s3", s3={k: v for k, v in s3.items() if v})
    return FaasExecutor(**settings)


def base_url(ex: FaasExecutor) -> str:
    """The URL of the root of the executor's storage (a bucket or a directory)."""
    storage = ex.storage
    if storage.name in ("s3", "cos"):
        return f"s3://{storage.bucket}"
    return storage.root  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            print("--format parquet needs pyarrow: pip install 'dask-faas[parquet]' (or --format csv)")
            return 2
    started = time.perf_counter()
    with executor_for(args) as ex:
        storage, root = ex.storage, base_url(ex)
        options = None
        if getattr(storage, "endpoint_url", None) or args.endpoint_url:
            options = {"endpoint_url": storage.endpoint_url, "region_name": storage.region_name}  # type: ignore[attr-defined]
        run = f"etl-example/{uuid.uuid4().hex[:8]}"
        created: list[str] = []
        if args.input:
            source = args.input
        else:
            for i in range(args.objects):
                key = f"{run}/input/trips-{i:03d}.csv"
                storage.put(key, make_trips(i, args.rows).to_csv(index=False).encode())
                created.append(key)
            source = f"{root}/{run}/input/*.csv"
        output = (args.output or f"{root}/{run}/output").rstrip("/")

        trips = fd.read_csv(source, blocksize=args.blocksize, storage_options=options, parse_dates=["pickup"])
        cleaned = transform(trips)
        summary = summarize(cleaned).repartition(npartitions=1)
        writer = fd.to_parquet if args.format == "parquet" else fd.to_csv
        rows = writer(cleaned, f"{output}/cleaned", storage_options=options, compute=False)
        sums = fd.to_csv(summary, f"{output}/summary-*.csv", storage_options=options, compute=False)
        with dask_faas.enable(ex):  # one compute: the input is read once, the shuffle goes through storage
            written = dask.compute(*rows, *sums)
        report = ex.last_report
        summary_url = written[-1]
        result = pd.read_csv(io.BytesIO(storage.get(_key(summary_url, root))), index_col="city")

        print(f"input     : {source} ({trips.npartitions} partitions)")
        print(f"output    : {len(rows)} {args.format} objects under {output}/cleaned/, summary {summary_url}")
        print(result.round(3).to_string())
        print(f"report    : {report}")
        ok = True
        if not args.input:
            expected = summarize(transform(_download(storage, created)))
            ok = result["trips"].to_dict() == expected["trips"].to_dict() and np.allclose(
                result["revenue"].sort_index(), expected["revenue"].sort_index()
            )
            print(f"check     : {'equal to' if ok else 'DIFFERENT FROM'} pandas on the downloaded objects")
        if not args.keep:
            removed = storage.delete_prefix(f"{run}/") if not args.output else 0
            print(f"cleanup   : {removed} objects removed (--keep keeps them)")
    print(f"wall time : {time.perf_counter() - started:.2f} s (pool start-up and shutdown included)")
    return 0 if ok else 1


def _key(url: str, root: str) -> str:
    return url[len(root) :].lstrip("/" + os.sep)


def _download(storage: dask_faas.Storage, keys: list[str]) -> pd.DataFrame:
    frames = [pd.read_csv(io.BytesIO(storage.get(key)), parse_dates=["pickup"]) for key in keys]
    return pd.concat(frames, ignore_index=True)


if __name__ == "__main__":
    sys.exit(main())
