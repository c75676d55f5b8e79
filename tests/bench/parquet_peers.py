"""The Parquet peers of the scan benchmark over S3 (MinIO): Polars' scan_parquet and DuckDB's
read_parquet (httpfs, loaded from the duckdb-ext-httpfs package). Queries: count, minmax (of
fare_amount), filter (fare_amount > 95, written back to S3 as CSV), day (trips and fares of one
day, on the sorted pickup time), agg (trips with more than two passengers, their fares' sum and
mean distance), zone (the first and last pickup zone names: text, dictionary-encoded).
Prints one JSON object of the answer.
Usage: parquet_peers.py polars|duckdb ENDPOINT BUCKET KEY QUERY [OUT_KEY]"""
import datetime
import json
import sys

from peers import duckdb_connection, polars_options

tool, endpoint, bucket, key, query = sys.argv[1:6]
url = f"s3://{bucket}/{key}"
day = (datetime.datetime(2024, 1, 15), datetime.datetime(2024, 1, 16))


def polars():
    import polars as pl

    options = polars_options(endpoint)
    frame = pl.scan_parquet(url, storage_options=options)
    fare = pl.col("fare_amount")
    if query == "count":
        return {"records": frame.select(pl.len()).collect().item()}
    if query == "minmax":
        row = frame.select(fare.min().alias("min"), fare.max().alias("max")).collect().row(0)
        return {"min": row[0], "max": row[1]}
    if query == "agg":
        row = frame.filter(pl.col("passenger_count") > 2).select(
            pl.len(), fare.sum(), pl.col("trip_distance").mean()).collect().row(0)
        return {"trips": row[0], "fares": row[1], "distance": row[2]}
    if query == "zone":
        zone = pl.col("PU_zone")
        row = frame.select(zone.min(), zone.max().alias("max")).collect().row(0)
        return {"min": row[0], "max": row[1]}
    if query == "day":
        when = pl.col("tpep_pickup_datetime")
        row = frame.filter((when >= day[0]) & (when < day[1])).select(pl.len(), fare.sum()).collect().row(0)
        return {"trips": row[0], "fares": row[1]}
    out = f"s3://{bucket}/{sys.argv[6]}"
    frame.filter(fare > 95).select("trip_id", "fare_amount").sink_csv(out, storage_options=options)
    return {"rows": pl.scan_csv(out, storage_options=options).select(pl.len()).collect().item()}


def duckdb():
    db = duckdb_connection(endpoint)
    source = f"read_parquet('{url}')"
    if query == "count":
        return {"records": db.execute(f"SELECT COUNT(*) FROM {source}").fetchone()[0]}
    if query == "minmax":
        low, high = db.execute(f"SELECT MIN(fare_amount), MAX(fare_amount) FROM {source}").fetchone()
        return {"min": low, "max": high}
    if query == "agg":
        trips, fares, distance = db.execute(
            f"SELECT COUNT(*), SUM(fare_amount), AVG(trip_distance) FROM {source} "
            "WHERE passenger_count > 2").fetchone()
        return {"trips": trips, "fares": fares, "distance": distance}
    if query == "zone":
        low, high = db.execute(f"SELECT MIN(PU_zone), MAX(PU_zone) FROM {source}").fetchone()
        return {"min": low, "max": high}
    if query == "day":
        trips, fares = db.execute(
            f"SELECT COUNT(*), SUM(fare_amount) FROM {source} WHERE tpep_pickup_datetime >= ? "
            "AND tpep_pickup_datetime < ?", list(day)).fetchone()
        return {"trips": trips, "fares": fares}
    out = f"s3://{bucket}/{sys.argv[6]}"
    db.execute(f"COPY (SELECT trip_id, fare_amount FROM {source} WHERE fare_amount > 95) TO '{out}' (FORMAT csv)")
    return {"rows": db.execute(f"SELECT COUNT(*) FROM read_csv('{out}')").fetchone()[0]}


print(json.dumps(polars() if tool == "polars" else duckdb()))
