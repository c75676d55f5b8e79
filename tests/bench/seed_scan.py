"""The seed's approach without S3 Select (closed to new customers): split the object into byte
ranges, read each range in a process pool with boto3, drop the partial first line, finish the last
one with a second read, parse with csv.DictReader (or json) and merge. Splits on newlines only.
Usage: seed_scan.py ENDPOINT BUCKET KEY csv|jsonl count|minmax|filter [OUT_PREFIX]"""
import csv
import io
import json
import os
import sys
from multiprocessing import Pool

import boto3

ENDPOINT, BUCKET, KEY, FORMAT, QUERY = sys.argv[1:6]
OUT = sys.argv[6] if len(sys.argv) > 6 else None
CHUNK = 64 << 20


def client():
    return boto3.client("s3", endpoint_url=ENDPOINT)


def read(s3, start, end):
    return s3.get_object(Bucket=BUCKET, Key=KEY, Range=f"bytes={start}-{end - 1}")["Body"].read()


def work(args):
    index, start, end, size, header = args
    s3 = client()
    data = read(s3, start, end)
    if start > 0:
        data = data[data.index(b"\n") + 1:] if b"\n" in data else b""
    tail = end
    while not data.endswith(b"\n") and tail < size:  # finish the last line
        more = read(s3, tail, min(size, tail + (1 << 16)))
        cut = more.find(b"\n")
        data += more if cut < 0 else more[: cut + 1]
        tail += len(more)
        if cut >= 0:
            break
    text = data.decode()
    if FORMAT == "csv":
        records = csv.DictReader(io.StringIO(text), fieldnames=header)
        if start == 0:
            next(records)
    else:
        records = (json.loads(line) for line in text.splitlines() if line.strip())
    count, low, high, kept = 0, None, None, []
    for record in records:
        count += 1
        try:
            fare = float(record["fare"])
        except (TypeError, ValueError):  # a record cut in half at a quoted newline
            continue
        if QUERY == "minmax":
            low = fare if low is None else min(low, fare)
            high = fare if high is None else max(high, fare)
        elif QUERY == "filter" and fare > 95:
            kept.append(f"{record['id']},{record['fare']}\n")
    if kept:
        s3.put_object(Bucket=BUCKET, Key=f"{OUT}part-{index:05}.csv", Body="".join(kept).encode())
    return count, low, high, len(kept)


if __name__ == "__main__":
    s3 = client()
    size = s3.head_object(Bucket=BUCKET, Key=KEY)["ContentLength"]
    header = read(s3, 0, 4096).split(b"\n")[0].decode().split(",") if FORMAT == "csv" else None
    tasks = [(i, start, min(size, start + CHUNK), size, header) for i, start in enumerate(range(0, size, CHUNK))]
    with Pool(os.cpu_count()) as pool:
        results = pool.map(work, tasks)
    lows = [r[1] for r in results if r[1] is not None]
    highs = [r[2] for r in results if r[2] is not None]
    print(json.dumps({"records": sum(r[0] for r in results), "min": min(lows) if lows else None,
                      "max": max(highs) if highs else None, "rows": sum(r[3] for r in results)}))
