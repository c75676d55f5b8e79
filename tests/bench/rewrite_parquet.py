"""Writes the benchmark's Parquet file again as DuckDB and Polars write Parquet (their own row
groups, encodings and statistics; zstd as the source), next to it in FOLDER as duckdb.parquet and
polars.parquet; prints the reference answers every writer's file must give, read by pyarrow from
the source a row group at a time: trips with more than two passengers, their fares' sum and mean
distance, trips over 95, and the first and last pickup zone names.
Usage: rewrite_parquet.py SOURCE FOLDER"""
import json
import math
import sys

import duckdb
import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq

source, folder = sys.argv[1:3]
duckdb.sql(f"COPY (SELECT * FROM read_parquet('{source}')) TO '{folder}/duckdb.parquet' "
           "(FORMAT parquet, COMPRESSION zstd)")
pl.scan_parquet(source).sink_parquet(f"{folder}/polars.parquet", compression="zstd")

trips, fares, distances, over95, zones = 0, [], [], 0, []
file = pq.ParquetFile(source)
for group in range(file.num_row_groups):
    table = file.read_row_group(group, columns=["passenger_count", "fare_amount", "trip_distance",
                                                "PU_zone"])
    ends = pc.min_max(table["PU_zone"])
    zones.extend([ends["min"].as_py(), ends["max"].as_py()])
    kept = pc.greater(table["passenger_count"], 2)
    trips += pc.sum(kept).as_py() or 0
    fares.extend(pc.filter(table["fare_amount"], kept).to_pylist())
    distances.extend(pc.filter(table["trip_distance"], kept).to_pylist())
    over95 += pc.sum(pc.greater(table["fare_amount"], 95)).as_py() or 0
print(json.dumps({"trips": trips, "fares": math.fsum(fares),
                  "distance": math.fsum(distances) / trips if trips else None, "over95": over95,
                  "zones": [min(zones), max(zones)]}))
