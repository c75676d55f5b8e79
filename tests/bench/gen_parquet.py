"""Writes the scan benchmark's Parquet object: about SIZE bytes of NYC yellow-taxi-like trips (the
19 columns of its schema, a trip id and the pickup zone's name: 265 names, dictionary-encoded as
writers encode such text), zstd, row groups of about GROUP bytes (default 128 MiB),
sorted by pickup time; prints the reference answers as JSON: rows, fare extremes, trips over 95,
and trips and fares of one day (the selective filter).
Usage: gen_parquet.py PATH SIZE [GROUP]"""
import datetime
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

path, size = sys.argv[1], int(sys.argv[2])
group_bytes = int(sys.argv[3]) if len(sys.argv) > 3 else 128 << 20
BYTES_PER_ROW = 24  # measured: what a row of these columns takes, zstd-compressed
rows = max(1, size // BYTES_PER_ROW)
GROUP_ROWS = max(1, group_bytes // BYTES_PER_ROW)
BATCH = 1 << 21
rng = np.random.default_rng(42)
start = np.datetime64("2024-01-01T00:00:00", "us")
span_us = 31 * 86_400 * 1_000_000
day = (datetime.datetime(2024, 1, 15), datetime.datetime(2024, 1, 16))
BOROUGHS = ["EWR", "Queens", "Bronx", "Manhattan", "Staten Island", "Brooklyn"]
ZONES = np.array([f"{BOROUGHS[i % 6]}: zone {i:03d}" for i in range(1, 266)], dtype=object)
answers = {"rows": rows, "minFare": None, "maxFare": None, "over95": 0, "dayTrips": 0, "dayFares": 0.0}


def batch(first, count):
    pickup = start + (np.arange(first, first + count, dtype=np.int64) * (span_us // rows)).astype("timedelta64[us]")
    minutes = rng.integers(1, 60, count)
    fare = np.round(rng.uniform(2.5, 99.99, count), 2)
    distance = np.round(rng.uniform(0.1, 30, count), 2)
    tip = np.round(fare * rng.uniform(0, 0.3, count), 2)
    pickup_location = rng.integers(1, 266, count).astype(np.int32)
    return pa.table({
        "trip_id": pa.array(np.arange(first, first + count, dtype=np.int64)),
        "VendorID": pa.array(rng.integers(1, 3, count).astype(np.int32)),
        "tpep_pickup_datetime": pa.array(pickup, pa.timestamp("us")),
        "tpep_dropoff_datetime": pa.array(pickup + minutes.astype("timedelta64[m]"), pa.timestamp("us")),
        "passenger_count": pa.array(rng.integers(0, 7, count).astype(np.int64)),
        "trip_distance": pa.array(distance),
        "RatecodeID": pa.array(rng.integers(1, 7, count).astype(np.int64)),
        "store_and_fwd_flag": pa.array(np.where(rng.random(count) < 0.01, "Y", "N")),
        "PULocationID": pa.array(pickup_location),
        "PU_zone": pa.array(ZONES[pickup_location - 1], pa.string()),
        "DOLocationID": pa.array(rng.integers(1, 266, count).astype(np.int32)),
        "payment_type": pa.array(rng.integers(1, 5, count).astype(np.int64)),
        "fare_amount": pa.array(fare),
        "extra": pa.array(rng.choice([0.0, 0.5, 1.0, 2.5], count)),
        "mta_tax": pa.array(np.full(count, 0.5)),
        "tip_amount": pa.array(tip),
        "tolls_amount": pa.array(np.where(rng.random(count) < 0.05, 6.94, 0.0)),
        "improvement_surcharge": pa.array(np.full(count, 1.0)),
        "total_amount": pa.array(np.round(fare + tip + 1.5, 2)),
        "congestion_surcharge": pa.array(rng.choice([0.0, 2.5], count)),
        "Airport_fee": pa.array(rng.choice([0.0, 1.75], count)),
    })


with pq.ParquetWriter(path, batch(0, 1).schema, compression="zstd") as writer:
    for first in range(0, rows, GROUP_ROWS):
        group = pa.concat_tables(batch(f, min(BATCH, first + GROUP_ROWS - f, rows - f))
                                 for f in range(first, min(rows, first + GROUP_ROWS), BATCH))
        writer.write_table(group, row_group_size=GROUP_ROWS)
        fare = group["fare_amount"]
        low, high = pc.min(fare).as_py(), pc.max(fare).as_py()
        answers["minFare"] = low if answers["minFare"] is None else min(answers["minFare"], low)
        answers["maxFare"] = high if answers["maxFare"] is None else max(answers["maxFare"], high)
        answers["over95"] += pc.sum(pc.greater(fare, 95)).as_py()
        when = group["tpep_pickup_datetime"]
        in_day = pc.and_(pc.greater_equal(when, pa.scalar(day[0], pa.timestamp("us"))),
                         pc.less(when, pa.scalar(day[1], pa.timestamp("us"))))
        answers["dayTrips"] += pc.sum(in_day).as_py() or 0
        answers["dayFares"] += pc.sum(pc.filter(fare, in_day)).as_py() or 0.0
print(json.dumps(answers))
