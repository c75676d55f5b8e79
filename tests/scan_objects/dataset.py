"""Writes the many-objects test dataset into a folder and prints, as JSON, what a sequential
reading of every object with Python's own csv, json, gzip and bz2 modules (and the zstd tool)
finds: the oracle the scans are checked against.

usage: dataset.py FOLDER SMALL_OBJECTS
"""
import bz2
import csv
import gzip
import io
import json
import os
import random
import subprocess
import sys

folder, small = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
CITIES = ["Oslo", "Lima", "Kyiv", "Pune", "Zürich", "Accra"]
NOTES = ["plain", "a, b", "line\nbreak", 'say "hi"', "", "crlf\r\ninside"]


def csv_text(first_id, rows, bom, crlf, final_newline):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(["id", "city", "note", "amount"])
    for i in range(rows):
        writer.writerow([first_id + i, rng.choice(CITIES), rng.choice(NOTES), rng.randint(0, 1000)])
    text = out.getvalue()
    if not final_newline:
        text = text.rstrip("\r\n")
    return ("\ufeff" if bom else "") + text


def put(key, data):
    path = os.path.join(folder, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def read_csv(data):
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def aggregates(records):
    amounts = [int(r["amount"]) for r in records]
    return {
        "n": len(records),
        "total": sum(amounts),
        "low": min(amounts) if amounts else None,
        "last": max((r["city"] for r in records), default=None),
    }


expected = {}
# Small objects, each with its own header; three large ones among them, split in many chunks.
next_id = 0
for i in range(small):
    rows = rng.randint(0, 12)
    text = csv_text(next_id, rows, bom=i % 5 == 0, crlf=i % 3 == 0, final_newline=i % 4 != 0)
    next_id += rows
    put(f"small/part-{i:05d}.csv", text.encode())
    if i % (small // 3) == 1:
        text = csv_text(next_id, 12000, bom=i % 2 == 0, crlf=i % 3 == 0, final_newline=True)
        next_id += 12000
        put(f"small/part-{i:05d}-large.csv", text.encode())
records = []
keys = sorted(
    os.path.relpath(os.path.join(root, name), folder)
    for root, _, files in os.walk(os.path.join(folder, "small"))
    for name in files
)
# Chunks of 64 KiB after each object's byte-order mark and header row, as the plan lays them out.
chunks = 0
for key in keys:
    with open(os.path.join(folder, key), "rb") as f:
        data = f.read()
    records.extend(read_csv(data))
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    # The header row ends at its first terminator byte (the CR of a CRLF: the LF is data).
    ends = [at for at in (data.find(b"\r", bom), data.find(b"\n", bom)) if at >= 0]
    header = min(ends) + 1 if ends else len(data)
    chunks += -(-(len(data) - header) // 65536)
expected["small"] = aggregates(records)
expected["small_chunks"] = chunks
expected["small_objects"] = len(keys)
# The rows of a row query, in key order, as s3flow writes CSV.
out = io.StringIO()
writer = csv.writer(out, lineterminator="\n")
writer.writerow(["id", "note"])
for r in records:
    if int(r["amount"]) > 990:
        writer.writerow([r["id"], r["note"]])
expected["small_rows"] = out.getvalue()
# The same rows of the three large objects only, as [id, note] in key order.
large = []
for key in keys:
    if key.endswith("-large.csv"):
        with open(os.path.join(folder, key), "rb") as f:
            large.extend([r["id"], r["note"]] for r in read_csv(f.read()) if int(r["amount"]) > 990)
expected["large_rows"] = large

# Daily dumps, compressed by the tools users have.
daily = []
for day in range(1, 10):
    # Day 2 (bzip2) is large: its first block ends past the first 64 KiB of compressed bytes.
    rows = 40000 if day == 2 else rng.randint(50, 400)
    text = csv_text(day * 100000, rows, bom=day == 1, crlf=day % 2 == 0, final_newline=True)
    data = text.encode()
    kind = ["gz", "zst", "bz2"][day % 3]
    if kind == "gz":
        packed = gzip.compress(data, 6)
    elif kind == "bz2":
        packed = bz2.compress(data)
    else:
        packed = subprocess.run(["zstd", "-q", "-c", "-3"], input=data, capture_output=True, check=True).stdout
    put(f"daily/2024-06-{day:02d}.csv.{kind}", packed)
    daily.extend(read_csv(data))
expected["daily"] = aggregates(daily)

# JSON Lines, one object per hour.
events = []
for hour in range(6):
    lines = []
    for i in range(rng.randint(1, 30)):
        event = {"hour": hour, "kind": rng.choice(["click", "view"]), "ms": rng.randint(1, 500)}
        events.append(event)
        lines.append(json.dumps(event))
    put(f"events/hour={hour:02d}/events.jsonl", ("\n".join(lines) + "\n").encode())
expected["events"] = {"n": len(events), "ms": sum(e["ms"] for e in events)}
expected["clicks"] = {"n": sum(1 for e in events if e["kind"] == "click")}
# The keys --keys-from names: every third small object, at most 1,000 (a list's bound).
chosen = keys[::3][:1000]
expected["chosen_keys"] = chosen
chosen_records = []
for key in chosen:
    with open(os.path.join(folder, key), "rb") as f:
        chosen_records.extend(read_csv(f.read()))
expected["chosen"] = aggregates(chosen_records)
print(json.dumps(expected))
