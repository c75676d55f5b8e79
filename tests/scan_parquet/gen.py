#!/usr/bin/env python3
"""The pyarrow side of tests/scan_parquet.rs: writes its Parquet files, and answers its queries
by reading those files back with pyarrow (an independent reader) and computing with pyarrow.

    gen.py write DIR    writes the files into DIR; prints a JSON description of each file
    gen.py expect       reads {"file": PATH, "queries": [...]} on stdin; prints the answers

Values are given as the scan engine represents them (the contract the test checks): integers as
integers, floats and DECIMALs with a scale as the nearest double (scale 0: an integer), strings
and binary as text, dates as 'YYYY-MM-DD', timestamps as 'YYYY-MM-DDTHH:MM:SS[.fraction]' with as
many fraction digits as the unit has and a 'Z' when the timestamp has a time zone.
"""

import datetime
import decimal
import json
import math
import random
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Uneven row groups of the typed table (5,000 rows).
GROUPS = [700, 50, 1300, 1, 450, 2000, 499]
ROWS = sum(GROUPS)
# The start of the timestamps: 2024-01-01T00:00:00Z.
EPOCH_2024 = 1_704_067_200

WORDS = [
    "apple", "banana", "cherry", "a", "ab", "abc", "Äpfel", "éclair", "zebra", "日本語",
    "emoji 😀", "with,comma", 'say "hi"', "new\nline", "tab\there", "%percent", "under_score",
]


def typed_table():
    """Every type the scan reads, nulls in each, a two-level struct, a list and a map."""
    rng = random.Random(20240601)
    n = ROWS

    def nulls(values, percent=10):
        return [None if rng.random() < percent / 100 else v for v in values]

    ids = list(range(n))
    i64 = [rng.randint(-5 * 10**14, 5 * 10**14) for _ in ids]
    # Past 2**53 (not exact as doubles), one of each sign: sums still fit in 64 bits.
    i64[123], i64[4321] = 2**62 + 1, -(2**62) - 3
    u64 = [rng.randint(0, 10**15) for _ in ids]
    u64[77] = 2**62 + 7
    f64 = [rng.uniform(-1e6, 1e6) for _ in ids]
    f64[5], f64[6] = 1e-300, -2.5e-310
    # A row group whose float column is all null (rows 700-749).
    f64_nulls = nulls(f64)
    for row in range(700, 750):
        f64_nulls[row] = None
    # Time: sorted with the rows, a random second and fraction, row 0 one tick before 1970.
    ns = [
        (EPOCH_2024 + i * 1500 + rng.randint(0, 1499)) * 10**9 + rng.randint(0, 10**9 - 1)
        for i in ids
    ]
    ns[0] = -1

    def ticks(per_second):
        return nulls([t // (10**9 // per_second) for t in ns], 8)

    def stamp(per_second, unit, tz=None):
        return pa.array(ticks(per_second), pa.int64()).cast(pa.timestamp(unit, tz))

    # st: struct<a: struct<b: int32, c: string>, d: double>, nulls at every level.
    b = pa.array(nulls([rng.randint(-1000, 1000) for _ in ids]), pa.int32())
    c = pa.array(nulls([rng.choice(WORDS) + "x" * rng.randint(0, 2) for _ in ids]), pa.string())
    inner_mask = pa.array([rng.random() < 0.05 for _ in ids])
    inner = pa.StructArray.from_arrays([b, c], names=["b", "c"], mask=inner_mask)
    d = pa.array(nulls([rng.uniform(0, 100) for _ in ids]), pa.float64())
    outer_mask = pa.array([rng.random() < 0.05 for _ in ids])
    st = pa.StructArray.from_arrays([inner, d], names=["a", "d"], mask=outer_mask)

    tags = [
        None if rng.random() < 0.1 else [rng.choice(WORDS) for _ in range(rng.randint(0, 3))]
        for _ in ids
    ]
    attrs = [
        None if rng.random() < 0.1 else [(f"k{j}", rng.randint(0, 9)) for j in range(rng.randint(0, 2))]
        for _ in ids
    ]
    columns = {
        "id": pa.array(ids, pa.int64()),
        "i8": pa.array(nulls([rng.randint(-128, 127) for _ in ids]), pa.int8()),
        "i16": pa.array(nulls([rng.randint(-32768, 32767) for _ in ids]), pa.int16()),
        "i32": pa.array(nulls([rng.randint(-2**31, 2**31 - 1) for _ in ids]), pa.int32()),
        "i64": pa.array(nulls(i64), pa.int64()),
        "u8": pa.array(nulls([rng.randint(0, 255) for _ in ids]), pa.uint8()),
        "u16": pa.array(nulls([rng.randint(0, 65535) for _ in ids]), pa.uint16()),
        "u32": pa.array(nulls([rng.randint(0, 2**32 - 1) for _ in ids]), pa.uint32()),
        "u64": pa.array(nulls(u64), pa.uint64()),
        "f32": pa.array(nulls([rng.uniform(-1000, 1000) for _ in ids]), pa.float32()),
        "f64": pa.array(f64_nulls, pa.float64()),
        "dec": pa.array(
            nulls([decimal.Decimal(rng.randint(-10**8, 10**8)).scaleb(-2) for _ in ids]),
            pa.decimal128(10, 2),
        ),
        "dec0": pa.array(
            nulls([decimal.Decimal(rng.randint(-10**11, 10**11)) for _ in ids]),
            pa.decimal128(12, 0),
        ),
        "str": pa.array(nulls([rng.choice(WORDS) + str(rng.randint(0, 99)) for _ in ids]), pa.string()),
        "bin": pa.array(nulls([f"key-{rng.randint(0, 49)}".encode() for _ in ids]), pa.binary()),
        "flag": pa.array(nulls([rng.random() < 0.3 for _ in ids]), pa.bool_()),
        "day": pa.array(
            nulls([datetime.date(2024, 1, 1) + datetime.timedelta(days=i // 40) for i in ids]),
            pa.date32(),
        ),
        "ts_s": stamp(1, "s"),
        "ts_ms": stamp(10**3, "ms"),
        "ts_us": stamp(10**6, "us"),
        "ts_ns": stamp(10**9, "ns"),
        "ts_ms_tz": stamp(10**3, "ms", "UTC"),
        "ts_us_tz": stamp(10**6, "us", "America/New_York"),
        "ts_ns_tz": stamp(10**9, "ns", "+05:30"),
        "st": st,
        "tags": pa.array(tags, pa.list_(pa.string())),
        "attrs": pa.array(attrs, pa.map_(pa.string(), pa.int32())),
    }
    return pa.table(columns)


# Writer options of the typed files: each codec, with and without statistics and page index,
# dictionary and plain encodings, data pages v1 and v2, small pages (many per column chunk).
TYPED_VARIANTS = {
    "typed-snappy-v1": dict(compression="snappy", data_page_version="1.0", use_dictionary=True),
    "typed-zstd-v2-index": dict(
        compression="zstd", data_page_version="2.0", write_page_index=True,
        use_dictionary=["str", "i32", "bin", "st.a.c"],
    ),
    "typed-gzip-nostats": dict(compression="gzip", write_statistics=False, use_dictionary=False),
    "typed-lz4-v2": dict(compression="lz4", data_page_version="2.0", use_dictionary=["str"]),
    "typed-brotli-index": dict(compression="brotli", write_page_index=True, use_dictionary=False),
    "typed-none-somestats": dict(
        compression="none", write_statistics=["id", "ts_us", "str"], use_dictionary=["str", "day"],
    ),
}


def write_groups(path, table, sizes, **options):
    """`table` as row groups of `sizes` rows, in order."""
    with pq.ParquetWriter(path, table.schema, data_page_size=2048, **options) as writer:
        at = 0
        for size in sizes:
            writer.write_table(table.slice(at, size), row_group_size=size)
            at += size
    assert at == table.num_rows


def sorted_table(rows):
    """Sorted by a timestamp (one per second from 2024-01-01) and a value, with a random payload."""
    rng = random.Random(7)
    return pa.table({
        "ts": pa.array([(EPOCH_2024 + i) * 10**6 for i in range(rows)], pa.int64())
        .cast(pa.timestamp("us")),
        "v": pa.array([3 * i - 1000 for i in range(rows)], pa.int64()),
        "payload": pa.array(["%024x" % rng.getrandbits(96) for _ in range(rows)], pa.string()),
    })


def edge_table():
    """Text that reads as numbers, empty strings, unsigned 64-bit values past i64: 6 groups of 4."""
    s = [
        "100", "20", "30", None,   # lexicographic min "100", max "30"; as numbers 20..100
        "", "b", "a", "",          # empty strings are values, not nulls
        "007", "9", "10", "abc",
        None, None, None, None,
        "5", "50", "500", "5000",
        "x", "", "y", "z",
    ]
    u64 = [
        2**64 - 1, 2**63, 2**63 - 1, None,
        1, 2, 3, 4,
        2**63 + 12345, None, 0, 10,
        None, None, None, None,
        18, 2**64 - 2, 7, 9,
        100, 200, 300, 400,
    ]
    return pa.table({
        "id": pa.array(range(len(s)), pa.int64()),
        "s": pa.array(s, pa.string()),
        "u64": pa.array(u64, pa.uint64()),
    })


def spans(path):
    """Each row group's byte range [start, end) over its column chunks (dictionary pages included)."""
    metadata = pq.ParquetFile(path).metadata
    out = []
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        starts, ends = [], []
        for i in range(group.num_columns):
            column = group.column(i)
            start = column.data_page_offset
            if column.has_dictionary_page and column.dictionary_page_offset is not None:
                start = min(start, column.dictionary_page_offset)
            starts.append(start)
            ends.append(start + column.total_compressed_size)
        out.append([min(starts), max(ends)])
    return out


def column_bytes(metadata):
    """Compressed bytes of each top-level column over all row groups."""
    sizes = {}
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for i in range(group.num_columns):
            column = group.column(i)
            top = column.path_in_schema.split(".")[0]
            sizes[top] = sizes.get(top, 0) + column.total_compressed_size
    return sizes


def describe(path):
    metadata = pq.ParquetFile(path).metadata
    group = metadata.row_group(0)
    return {
        "path": path,
        "rows": metadata.num_rows,
        "row_groups": metadata.num_row_groups,
        "spans": spans(path),
        "columns": flat_names(pq.read_schema(path)),
        "column_bytes": column_bytes(metadata),
        "codecs": sorted({group.column(i).compression for i in range(group.num_columns)}),
        "first_page": group.column(0).data_page_offset,
    }


def write(directory):
    files = {}
    typed = typed_table()
    # Parquet has no seconds: pyarrow stores ts_s in milliseconds and reads it back so.
    at = typed.schema.get_field_index("ts_s")
    read_back = typed.set_column(at, "ts_s", typed.column(at).cast(pa.timestamp("ms")))
    for name, options in TYPED_VARIANTS.items():
        path = f"{directory}/{name}.parquet"
        write_groups(path, typed, GROUPS, **options)
        assert pq.read_table(path).equals(read_back), f"{name} reads back different"
        files[name] = describe(path)
    path = f"{directory}/typed-one-group.parquet"
    pq.write_table(typed, path, row_group_size=ROWS)
    files["typed-one-group"] = describe(path)

    rng = random.Random(11)
    many = pa.table({
        "id": pa.array(range(3000), pa.int64()),
        "v": pa.array([rng.uniform(-10, 10) for _ in range(3000)], pa.float64()),
        "name": pa.array([f"n{rng.randint(0, 99999):05}" for _ in range(3000)], pa.string()),
    })
    path = f"{directory}/many-groups.parquet"
    pq.write_table(many, path, row_group_size=3)
    files["many-groups"] = describe(path)

    table = sorted_table(20 * 4000)
    for name, stats in [("sorted", True), ("sorted-nostats", False)]:
        path = f"{directory}/{name}.parquet"
        pq.write_table(table, path, row_group_size=4000, write_statistics=stats, compression="snappy")
        files[name] = describe(path)

    # Floats of few distinct values, dictionary-encoded throughout, 4 row groups (pyarrow writes
    # no nan_count): without NaN, and with a NaN in the third row group only.
    rng = random.Random(13)
    fares = [round(rng.uniform(2.5, 99.99), 2) for _ in range(300)]
    for name, nan_row in [("floats-dict", None), ("floats-dict-nan", 2 * 25_000 + 7)]:
        values = [rng.choice(fares) if i % 97 else None for i in range(4 * 25_000)]
        if nan_row is not None:
            values[nan_row] = math.nan
        table = pa.table({
            "id": pa.array(range(len(values)), pa.int64()),
            "f64": pa.array(values, pa.float64()),
            "f32": pa.array(values, pa.float32()),
        })
        path = f"{directory}/{name}.parquet"
        pq.write_table(table, path, row_group_size=25_000, use_dictionary=True)
        files[name] = describe(path)

    # Names that are no plain identifiers: a dot in a top-level name, a space, upper case.
    names = pa.table({
        "a.b": pa.array([1, None, 3, 4, 5, 6], pa.int64()),
        "my col": pa.array(["p", "q", None, "s", "t", "u"], pa.string()),
        "Upper": pa.array([1.5, 2.5, 3.5, None, 5.5, 6.5], pa.float64()),
        "st": pa.StructArray.from_arrays(
            [pa.array([10, 20, 30, 40, None, 60], pa.int32())], names=["c"],
            mask=pa.array([False, False, True, False, False, False]),
        ),
        "z": pa.array(range(6), pa.int64()),
    })
    path = f"{directory}/names.parquet"
    pq.write_table(names, path, row_group_size=2)
    files["names"] = describe(path)

    edge = edge_table()
    for name, stats in [("edge", True), ("edge-nostats", False)]:
        path = f"{directory}/{name}.parquet"
        write_groups(path, edge, [4] * 6, write_statistics=stats, use_dictionary=False)
        files[name] = describe(path)
    json.dump(files, sys.stdout)


# ---------------------------------------------------------------------------------------------
# Answers


def flat_names(schema):
    names = []

    def add(prefix, field):
        name = f"{prefix}.{field.name}" if prefix else field.name
        if pa.types.is_struct(field.type):
            for child in field.type:
                add(name, child)
        else:
            names.append(name)

    for field in schema:
        add("", field)
    return names


def flatten(table):
    """Struct fields as columns named by dotted path; a null struct makes its fields null."""
    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    return table


def time_text(ticks, unit, zoned):
    per, digits = {"s": (1, 0), "ms": (10**3, 3), "us": (10**6, 6), "ns": (10**9, 9)}[unit]
    seconds, fraction = divmod(ticks, per)
    days, second = divmod(seconds, 86400)
    day = datetime.date(1970, 1, 1) + datetime.timedelta(days=days)
    text = f"{day.isoformat()}T{second // 3600:02}:{second // 60 % 60:02}:{second % 60:02}"
    if digits:
        text += f".{fraction:0{digits}}"
    return text + ("Z" if zoned else "")


def engine_values(array):
    """The values of `array` as the engine represents them (None for null)."""
    t = array.type
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_timestamp(t):
        ticks = array.cast(pa.int64()).to_pylist()
        return [None if x is None else time_text(x, t.unit, t.tz is not None) for x in ticks]
    if pa.types.is_date32(t):
        days = array.cast(pa.int32()).to_pylist()
        return [None if x is None else
                (datetime.date(1970, 1, 1) + datetime.timedelta(days=x)).isoformat() for x in days]
    if pa.types.is_decimal(t):
        return [None if x is None else (int(x) if t.scale == 0 else float(x)) for x in array.to_pylist()]
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return [None if x is None else x.decode("utf-8", "replace") for x in array.to_pylist()]
    if pa.types.is_floating(t):
        return [None if x is None else float(x) for x in array.to_pylist()]
    return array.to_pylist()


def engine_scalar(array, scalar):
    return engine_values(pa.repeat(scalar, 1))[0]


# Helpers the test's Python filter expressions use (SQL semantics: NULL compares unknown, and a
# filter keeps the rows where it is TRUE).
T = None  # the flattened table of the current file
ORIGINAL = None  # the same, structs unflattened


def c(name):
    return T.column(name).combine_chunks()


def struct(path):
    """A struct column or a struct inside one (`st.a`), null where it or a parent is null."""
    first, *rest = path.split(".")
    array = ORIGINAL.column(first).combine_chunks()
    for name in rest:
        fields = array.flatten()  # the parent's nulls applied
        array = fields[[f.name for f in array.type].index(name)]
    return array


def text(name):
    """A column as the engine's text (dates and timestamps as ISO text, binary as UTF-8)."""
    return pa.array(engine_values(c(name)), pa.string())


def AND(a, b):
    return pc.and_kleene(a, b)


def OR(a, b):
    return pc.or_kleene(a, b)


def NOT(a):
    return pc.invert(a)


def between(x, low, high):
    return AND(pc.greater_equal(x, low), pc.less_equal(x, high))


def isin(x, values):
    hit = pc.is_in(x, value_set=pa.array(values, x.type))
    return pc.if_else(pc.is_null(x), pa.scalar(None, pa.bool_()), hit)


def like(x, pattern):
    return pc.match_like(x, pattern)


def as_int64(x):
    return pc.cast(x, pa.int64())


def rem(x, k):
    return pa.array([None if v is None else int(math.fmod(v, k)) for v in x.to_pylist()], pa.int64())


def aggregate(table, kind, column):
    if kind == "count_all":
        return table.num_rows
    array = table.column(column).combine_chunks()
    valid = array.drop_null()
    if kind == "count":
        return len(valid)
    if len(valid) == 0:
        return None
    t = array.type
    if kind in ("sum", "avg"):
        if pa.types.is_integer(t) or (pa.types.is_decimal(t) and t.scale == 0):
            total = sum(int(v) for v in valid.to_pylist())
            if pa.types.is_integer(t) and abs(total) < 2**63:
                assert pc.sum(valid).as_py() == total
            return total if kind == "sum" else float(total) / len(valid)
        values = engine_values(valid)
        total = math.fsum(values)
        # pyarrow's own sum agrees up to its summation order.
        check = float(pc.sum(valid).as_py())
        assert abs(check - total) <= 1e-9 * max(1.0, math.fsum(abs(v) for v in values)), (check, total)
        return total if kind == "sum" else total / len(valid)
    if kind in ("min", "max"):
        # SQL order: NaN above every number (pyarrow's min_max leaves NaN out).
        if pa.types.is_floating(t) and any(math.isnan(v) for v in valid.to_pylist()):
            if kind == "max" or all(math.isnan(v) for v in valid.to_pylist()):
                return "NaN"
        return engine_scalar(array, pc.min_max(array)[kind])
    raise ValueError(kind)


def ruled_out(path, column, op, literals):
    """Row groups whose statistics show that no row can satisfy `column op literals`, and their
    bytes; from pyarrow's reading of the statistics."""
    pf = pq.ParquetFile(path)
    metadata = pf.metadata
    group = metadata.row_group(0)
    index = [group.column(i).path_in_schema for i in range(group.num_columns)].index(column)
    field = pf.schema_arrow.field(column)
    count, size = 0, 0
    for g, (start, end) in enumerate(spans(path)):
        stats = metadata.row_group(g).column(index).statistics
        if stats is None:
            continue
        if stats.has_null_count and stats.null_count == metadata.row_group(g).num_rows:
            count += 1  # every value is null: no comparison holds
            size += end - start
            continue
        if not stats.has_min_max:
            continue
        low = engine_values(pa.array([stats.min], field.type))[0]
        high = engine_values(pa.array([stats.max], field.type))[0]
        if op == ">=":
            out = high < literals[0]
        elif op == "<":
            out = low >= literals[0]
        elif op == "=":
            out = not (low <= literals[0] <= high)
        elif op == "between":
            out = high < literals[0] or low > literals[1]
        else:
            raise ValueError(op)
        if out:
            count += 1
            size += end - start
    return {"skipped": count, "skippedBytes": size}


def expect(request):
    global T, ORIGINAL
    path = request["file"]
    ORIGINAL = pq.read_table(path)
    table = flatten(ORIGINAL)
    answers = []
    for query in request["queries"]:
        if "ruled_out" in query:
            answers.append(ruled_out(path, *query["ruled_out"]))
            continue
        T = table
        selected = table
        if query.get("where"):
            mask = eval(query["where"])
            selected = table.filter(mask)
        if "aggs" in query:
            answers.append([aggregate(selected, kind, column) for kind, column in query["aggs"]])
        else:
            names = query["rows"] or flat_names(pq.read_schema(path))
            limit = query.get("limit")
            if limit is not None:
                selected = selected.slice(0, limit)
            columns = [engine_values(selected.column(n)) if not
                       (pa.types.is_list(selected.column(n).type) or pa.types.is_map(selected.column(n).type))
                       else [None] * selected.num_rows for n in names]
            answers.append({"names": names, "rows": [list(r) for r in zip(*columns)]})
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    elif sys.argv[1] == "expect":
        expect(json.load(sys.stdin))
    else:
        sys.exit(__doc__)
