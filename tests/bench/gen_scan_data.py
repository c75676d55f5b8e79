"""Writes the scan benchmark's objects: a CSV (with a header row and a few quoted fields holding
commas, quotes and newlines) and the same rows as JSON Lines, each about SIZE bytes, and prints
their record counts and fare extremes as JSON (the reference answers)."""
import json
import random
import sys

csv_path, jsonl_path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(42)
vendors = ["CMT", "VTS", "DDS", "Curb", "Uber"]
notes = ["", "", "", "airport", "cash", 'said "thanks"', "a, b", "two\nlines"]


def rows(count, start):
    for i in range(start, start + count):
        yield i, rng.choice(vendors), round(rng.uniform(0.1, 30), 2), round(rng.uniform(2.5, 99.99), 2), rng.choice(notes)


def csv_field(text):
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


# One block of distinct rows, repeated: fast to write, the answers still exact.
block = list(rows(200_000, 0))
csv_block = "".join(f"{i},{v},{d},{f},{csv_field(n)}\n" for i, v, d, f, n in block).encode()
jsonl_block = "".join(
    json.dumps({"id": i, "vendor": v, "distance": d, "fare": f, "note": n}) + "\n" for i, v, d, f, n in block
).encode()
fares = [f for _, _, _, f, _ in block]
answers = {}
for path, data, header in ((csv_path, csv_block, b"id,vendor,distance,fare,note\n"), (jsonl_path, jsonl_block, b"")):
    repeats = max(1, size // len(data))
    with open(path, "wb") as out:
        out.write(header)
        for _ in range(repeats):
            out.write(data)
    answers[path] = {"records": repeats * len(block), "minFare": min(fares), "maxFare": max(fares),
                     "over95": repeats * sum(1 for f in fares if f > 95)}
print(json.dumps(answers))
