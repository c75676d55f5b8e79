"""Writes the many-objects benchmark's data into FOLDER: CSV_OBJECTS CSV objects of about 1 MiB
(`many/csv/part-NNNN.csv`, a header row each, a few quoted fields holding commas, quotes and
newlines) and PARQUET_OBJECTS Parquet objects of about 10 MiB, hive-partitioned by day, two per
day (`many/parquet/day=2024-MM-DD/part-K.parquet`, zstd); prints the reference answers as JSON:
records, fare extremes and fares over 95 of each format, and trips and fares of one day (DAY) of
the Parquet.
Usage: gen_many.py FOLDER CSV_OBJECTS PARQUET_OBJECTS"""
import datetime
import json
import os
import random
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

folder, csv_objects, parquet_objects = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
DAY = "2024-02-01"
rng = random.Random(7)
vendors = ["CMT", "VTS", "DDS", "Curb", "Uber"]
notes = ["", "", "", "airport", "cash", 'said "thanks"', "a, b", "two\nlines"]


def csv_field(text):
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


answers = {}
os.makedirs(os.path.join(folder, "many/csv"), exist_ok=True)
# One block of about 1 MiB of distinct rows is every CSV object's body: fast to write, the
# answers still exact.
lines, fares, size = [], [], 0
while size < 1 << 20:
    fare = round(rng.uniform(2.5, 99.99), 2)
    note = csv_field(rng.choice(notes))
    lines.append(f"{len(lines)},{rng.choice(vendors)},{round(rng.uniform(0.1, 30), 2)},{fare},{note}\n")
    fares.append(fare)
    size += len(lines[-1])
body = ("id,vendor,distance,fare,note\n" + "".join(lines)).encode()
for number in range(csv_objects):
    with open(os.path.join(folder, f"many/csv/part-{number:04d}.csv"), "wb") as out:
        out.write(body)
answers["csv"] = {"records": csv_objects * len(lines), "minFare": min(fares), "maxFare": max(fares),
                  "over95": csv_objects * sum(1 for f in fares if f > 95)}

ROWS = 1_900_000  # about 10 MiB of these columns, zstd
generator = np.random.default_rng(7)
first_day = datetime.date(2024, 1, 1)
parquet = {"records": 0, "minFare": None, "maxFare": None, "over95": 0, "dayTrips": 0, "dayFares": 0.0}
for number in range(parquet_objects):
    day = (first_day + datetime.timedelta(days=number // 2)).isoformat()
    fare = np.round(generator.uniform(2.5, 99.99, ROWS), 2)
    table = pa.table({
        "trip_id": pa.array(np.arange(number * ROWS, (number + 1) * ROWS, dtype=np.int64)),
        "passenger_count": pa.array(generator.integers(0, 7, ROWS).astype(np.int64)),
        "trip_distance": pa.array(np.round(generator.uniform(0.1, 30, ROWS), 2)),
        "fare_amount": pa.array(fare),
        "payment_type": pa.array(generator.integers(1, 5, ROWS).astype(np.int64)),
    })
    path = os.path.join(folder, f"many/parquet/day={day}")
    os.makedirs(path, exist_ok=True)
    pq.write_table(table, os.path.join(path, f"part-{number % 2}.parquet"), compression="zstd")
    parquet["records"] += ROWS
    parquet["over95"] += int((fare > 95).sum())
    low, high = float(fare.min()), float(fare.max())
    parquet["minFare"] = low if parquet["minFare"] is None else min(parquet["minFare"], low)
    parquet["maxFare"] = high if parquet["maxFare"] is None else max(parquet["maxFare"], high)
    if day == DAY:
        parquet["dayTrips"] += ROWS
        parquet["dayFares"] += pc.sum(table["fare_amount"]).as_py()
answers["parquet"] = parquet
answers["day"] = DAY
print(json.dumps(answers))
