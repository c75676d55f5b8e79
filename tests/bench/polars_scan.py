"""Polars' lazy scan of an object in S3 (MinIO): COUNT, MIN/MAX of fare, or a filter written back.
Usage: polars_scan.py ENDPOINT BUCKET KEY csv|jsonl count|minmax|filter [OUT_KEY]"""
import json
import sys

from peers import polars_options

import polars as pl

endpoint, bucket, key, fmt, query = sys.argv[1:6]
options = polars_options(endpoint)
url = f"s3://{bucket}/{key}"
frame = pl.scan_csv(url, storage_options=options) if fmt == "csv" else pl.scan_ndjson(url, storage_options=options)
if query == "count":
    print(json.dumps({"records": frame.select(pl.len()).collect().item()}))
elif query == "minmax":
    row = frame.select(pl.col("fare").min().alias("min"), pl.col("fare").max().alias("max")).collect().row(0)
    print(json.dumps({"min": row[0], "max": row[1]}))
else:
    selected = frame.filter(pl.col("fare") > 95).select("id", "fare")
    selected.sink_csv(f"s3://{bucket}/{sys.argv[6]}", storage_options=options)
    print(json.dumps({"rows": pl.scan_csv(f"s3://{bucket}/{sys.argv[6]}", storage_options=options).select(pl.len()).collect().item()}))
