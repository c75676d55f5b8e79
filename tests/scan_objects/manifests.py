"""Writes objects and two manifests naming some of them, as AWS writes them: an S3 Batch
Operations CSV (bucket,key with URL-encoded keys) and an S3 Inventory (manifest.json and a gzip
CSV data file with Bucket, Key, Size, LastModifiedDate, ETag: an MD5, as S3 gives single-part
objects). Prints, as JSON, what Python's csv module finds in the objects each names.

usage: manifests.py FOLDER BUCKET
"""
import csv
import gzip
import hashlib
import io
import json
import os
import sys
import urllib.parse

folder, bucket = sys.argv[1], sys.argv[2]


def put(key, data):
    path = os.path.join(folder, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


objects = {}
for i in range(40):
    name = ["plain", "with space", "plus+sign", "accent-é", "comma,name"][i % 5]
    key = f"data/{name}-{i:02d}.csv"
    rows = "".join(f"{i * 100 + j},{(i * 7 + j) % 50}\n" for j in range(i % 9))
    objects[key] = ("id,v\n" + rows).encode()
    put(key, objects[key])


def answer(keys):
    records = [r for k in keys for r in csv.DictReader(io.StringIO(objects[k].decode()))]
    return {"n": len(records), "total": sum(int(r["v"]) for r in records)}


batch = sorted(objects)[::2]
out = io.StringIO()
writer = csv.writer(out, lineterminator="\n")
for key in batch:
    writer.writerow([bucket, urllib.parse.quote_plus(key, safe="/")])
put("manifests/batch.csv", out.getvalue().encode())

inventory = sorted(objects)[1::3]
# Two data files, as S3 splits a large Inventory.
data_files = []
for part, keys in enumerate([inventory[:5], inventory[5:]]):
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for key in keys:
        data = objects[key]
        writer.writerow(
            [bucket, urllib.parse.quote_plus(key, safe="/"), len(data), "2024-06-01T00:00:00.000Z",
             hashlib.md5(data).hexdigest()]
        )
    data_files.append(f"inventory/data/part-{part}.csv.gz")
    put(data_files[-1], gzip.compress(out.getvalue().encode()))
put(
    "inventory/manifest.json",
    json.dumps(
        {
            "sourceBucket": bucket,
            "destinationBucket": f"arn:aws:s3:::{bucket}",
            "version": "2016-11-30",
            "fileFormat": "CSV",
            "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag",
            "files": [{"key": key, "size": 0, "MD5checksum": ""} for key in data_files],
        }
    ).encode(),
)
print(
    json.dumps(
        {
            "batch": answer(batch),
            "batch_objects": len(batch),
            "inventory": answer(inventory),
            "inventory_objects": len(inventory),
            "inventory_first": inventory[0],
            "inventory_but_first": answer(inventory[1:]),
            "batch_keys": batch,
            "inventory_keys": inventory,
            "batch_first": batch[0],
            "batch_but_first": answer(batch[1:]),
        }
    )
)
