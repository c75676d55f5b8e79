"""Writes CSV and Parquet objects whose columns differ (order, some missing, some extra) and
prints, as JSON, the answers of a union by name: Python's csv module for the CSV objects, and
pyarrow's dataset reader over the unified schema (a missing column is null) for the Parquet ones.

usage: union.py FOLDER
"""
import csv
import io
import json
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

folder = sys.argv[1]
os.makedirs(os.path.join(folder, "union/csv"), exist_ok=True)
os.makedirs(os.path.join(folder, "union/pq"), exist_ok=True)

csv_objects = {
    "a.csv": "id,v\n1,10\n2,20\n",
    "b.csv": "v,extra,id\n5,x,3\n6,y,4\n",
    "c.csv": "id\n5\n6\n7\n",
}
records = []
for name, text in sorted(csv_objects.items()):
    with open(os.path.join(folder, "union/csv", name), "w") as f:
        f.write(text)
    records.extend(csv.DictReader(io.StringIO(text)))
values = [int(r["v"]) for r in records if r.get("v")]

tables = {
    "1.parquet": pa.table({"id": pa.array([1, 2], pa.int64()), "v": pa.array([1.5, 2.5])}),
    "2.parquet": pa.table({"id": pa.array([3], pa.int64()), "w": pa.array(["z"])}),
    "3.parquet": pa.table({"v": pa.array([4.0, None, 6.0]), "id": pa.array([4, 5, 6], pa.int64())}),
}
for name, table in tables.items():
    pq.write_table(table, os.path.join(folder, "union/pq", name))
# Per column the queries name, the objects that lack it (those with none left out).
named = ["v"]
csv_missing = {
    c: n
    for c in named
    if (n := sum(c not in text.split("\n")[0].split(",") for text in csv_objects.values()))
}
pq_missing = {
    c: n for c in named if (n := sum(c not in t.column_names for t in tables.values()))
}
schema = pa.unify_schemas([t.schema for t in tables.values()])
table = ds.dataset(os.path.join(folder, "union/pq"), schema=schema, format="parquet").to_table()
print(
    json.dumps(
        {
            "csv": {"n": len(records), "total": sum(values), "with_v": len(values)},
            "csv_missing": csv_missing,
            "parquet_missing": pq_missing,
            "parquet": {
                "n": table.num_rows,
                "total": pc.sum(table["v"]).as_py(),
                "with_v": pc.count(table["v"]).as_py(),
            },
        }
    )
)
