"""Writes a hive-partitioned Parquet dataset with pyarrow's `write_dataset` (year=/month=
folders) into a folder, and prints, as JSON, what pyarrow's own dataset reader finds in it: the
oracle of the hive test.

usage: hive.py FOLDER BUCKET
"""
import json
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

folder, bucket = sys.argv[1], sys.argv[2]
rows = 48_000
n = pa.array(range(rows), pa.int64())
table = pa.table(
    {
        "id": n,
        "fare": pc.divide(pc.cast(pc.remainder(n, 997), pa.float64()), 4.0),
        "year": pc.add(pc.cast(pc.remainder(n, 2), pa.int64()), 2023),
        "month": pc.add(pc.cast(pc.remainder(pc.divide(n, 2), 6), pa.int64()), 1),
    }
)
ds.write_dataset(
    table,
    os.path.join(folder, "trips"),
    format="parquet",
    partitioning=ds.partitioning(
        pa.schema([("year", pa.int64()), ("month", pa.int64())]), flavor="hive"
    ),
)
dataset = ds.dataset(os.path.join(folder, "trips"), format="parquet", partitioning="hive")
kept = dataset.to_table(filter=(ds.field("year") == 2024) & (ds.field("month") <= 3))
files = sorted(os.path.relpath(f, folder) for f in dataset.files)
kept_files = [f for f in files if "year=2024/" in f and int(f.split("month=")[1].split("/")[0]) <= 3]
# The folders a listing by folder leaves unlisted: every year but 2024, and 2024's months past 3.
years = {f.split("year=")[1].split("/")[0] for f in files}
months_2024 = {f.split("month=")[1].split("/")[0] for f in files if "year=2024/" in f}
pruned_folders = len(years - {"2024"}) + len([m for m in months_2024 if int(m) > 3])
last = dataset.to_table(filter=ds.field("id") == rows - 7).to_pylist()[0]
print(
    json.dumps(
        {
            "all": {"n": dataset.count_rows()},
            "kept": {
                "n": kept.num_rows,
                "total": pc.sum(kept["fare"]).as_py(),
                "top": pc.max(kept["id"]).as_py(),
            },
            "files": len(files),
            "kept_files": len(kept_files),
            "kept_keys": kept_files,
            "pruned_folders": pruned_folders,
            "kept_bytes": sum(os.path.getsize(os.path.join(folder, f)) for f in kept_files),
            "first_path": f"s3://{bucket}/{files[0]}",
            "row": f"{last['year']},{last['month']},{last['id']}",
            "largest": max(os.path.getsize(os.path.join(folder, f)) for f in files),
        }
    )
)
