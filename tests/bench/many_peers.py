"""The peers of the many-objects benchmark over S3 (MinIO), each with a glob: Polars'
scan_csv/scan_parquet and DuckDB's read_csv/read_parquet (httpfs, loaded from the
duckdb-ext-httpfs package), with hive partitions for Parquet. Queries: count, minmax (of the
fare), day (trips and fares of one day, a hive partition), filter (fares over 95 with their id,
written back to S3 as CSV). Prints one JSON object of the answer.
Usage: many_peers.py polars|duckdb ENDPOINT BUCKET csv|parquet count|minmax|day|filter DAY [OUT_KEY]"""
import datetime
import json
import sys

from peers import duckdb_connection, polars_options

tool, endpoint, bucket, fmt, query, day = sys.argv[1:7]
glob = f"s3://{bucket}/many/csv/*.csv" if fmt == "csv" else f"s3://{bucket}/many/parquet/**/*.parquet"
fare = "fare" if fmt == "csv" else "fare_amount"
ident = "id" if fmt == "csv" else "trip_id"


def polars():
    import polars as pl

    options = polars_options(endpoint)
    if fmt == "csv":
        frame = pl.scan_csv(glob, storage_options=options)
    else:
        frame = pl.scan_parquet(glob, storage_options=options, hive_partitioning=True)
    column = pl.col(fare)
    if query == "count":
        return {"records": frame.select(pl.len()).collect().item()}
    if query == "minmax":
        row = frame.select(column.min().alias("min"), column.max().alias("max")).collect().row(0)
        return {"min": row[0], "max": row[1]}
    if query == "filter":
        out = f"s3://{bucket}/{sys.argv[7]}"
        frame.filter(column > 95).select(ident, fare).sink_csv(out, storage_options=options)
        return {"rows": pl.scan_csv(out, storage_options=options).select(pl.len()).collect().item()}
    when = datetime.date.fromisoformat(day)
    row = frame.filter(pl.col("day") == when).select(pl.len(), column.sum()).collect().row(0)
    return {"trips": row[0], "fares": row[1]}


def duckdb():
    db = duckdb_connection(endpoint)
    source = f"read_csv('{glob}')" if fmt == "csv" else f"read_parquet('{glob}', hive_partitioning=true)"
    if query == "count":
        return {"records": db.execute(f"SELECT COUNT(*) FROM {source}").fetchone()[0]}
    if query == "minmax":
        low, high = db.execute(f"SELECT MIN({fare}), MAX({fare}) FROM {source}").fetchone()
        return {"min": low, "max": high}
    if query == "filter":
        out = f"s3://{bucket}/{sys.argv[7]}"
        db.execute(f"COPY (SELECT {ident}, {fare} FROM {source} WHERE {fare} > 95) TO '{out}' (FORMAT csv)")
        return {"rows": db.execute(f"SELECT COUNT(*) FROM read_csv('{out}')").fetchone()[0]}
    trips, fares = db.execute(
        f"SELECT COUNT(*), SUM({fare}) FROM {source} WHERE day = ?", [datetime.date.fromisoformat(day)]
    ).fetchone()
    return {"trips": trips, "fares": fares}


print(json.dumps(polars() if tool == "polars" else duckdb()))
