"""The reference answers of the Parquet conformance test (tests/parquet_conformance.rs), from
pyarrow's own reading of each file, in the engine's conventions:

- numbers as numbers (DECIMAL as the nearest double, an integer at scale 0; uint64 past 2^63 as
  the nearest double), NaN and the infinities as the strings "NaN", "Infinity", "-Infinity";
- text and binary as UTF-8 text (invalid bytes replaced), dates and timestamps as ISO 8601 text,
  times of day as HH:MM:SS[.fraction];
- structs as objects, lists as arrays, maps as objects keyed by the key's text;
- MIN and MAX in SQL order: NaN above every number.

`expect FILE` prints one JSON object: whether pyarrow reads the file (and why not), its rows,
its top-level primitive columns with COUNT, MIN and MAX, and every row as the engine's JSON Lines
output writes it.

`write DIRECTORY` writes the same kinds of files with DuckDB and Polars (each makes its own choices
of page versions, encodings, statistics and row-group sizes) and prints their paths.
"""

import datetime
import decimal
import json
import math
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def date_text(days):
    """YYYY-MM-DD of a day count since 1970-01-01, proleptic Gregorian, for any year (Python's
    dates stop at year 9999)."""
    z = days + 719468
    era, doe = divmod(z, 146097)
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return f"{year:04}-{month:02}-{day:02}"


def time_text(ticks, unit, zoned):
    per, digits = {"s": (1, 0), "ms": (10**3, 3), "us": (10**6, 6), "ns": (10**9, 9)}[unit]
    seconds, fraction = divmod(ticks, per)
    days, second = divmod(seconds, 86400)
    text = f"{date_text(days)}T{clock(second, fraction, digits)}"
    return text + ("Z" if zoned else "")


def clock(second, fraction, digits):
    text = f"{second // 3600:02}:{second // 60 % 60:02}:{second % 60:02}"
    return text + (f".{fraction:0{digits}}" if digits else "")


def float_json(x):
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def scalar(t, v):
    """One non-null value of Arrow type `t` (as pyarrow's to_pylist gives it) as the engine's
    JSON value."""
    if pa.types.is_timestamp(t):
        return time_text(v, t.unit, t.tz is not None)
    if pa.types.is_date(t):
        return v.isoformat() if isinstance(v, datetime.date) else v
    if pa.types.is_time(t):
        per, digits = {"s": (1, 0), "ms": (10**3, 3), "us": (10**6, 6), "ns": (10**9, 9)}[t.unit]
        second, fraction = divmod(v, per)
        return clock(second, fraction, digits)
    if pa.types.is_decimal(t):
        return int(v) if t.scale == 0 and abs(int(v)) < 2**63 else float(v)
    if pa.types.is_floating(t):
        return float_json(float(v))
    if pa.types.is_integer(t):
        return v if v < 2**63 else float(v)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) \
            or pa.types.is_binary_view(t):
        return v.decode("utf-8", "replace")
    return v


def key_text(t, v):
    """A map key as the engine names it: its value's text."""
    value = scalar(t, v)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if value != int(value) else f"{value:.0f}" if abs(value) < 1e16 else repr(value)
    return str(value)


def to_json(t, v):
    """Any value of type `t` (None for null) as the engine's JSON value."""
    if v is None:
        return None
    if pa.types.is_struct(t):
        return {f.name: to_json(f.type, v.get(f.name)) for f in t}
    if pa.types.is_map(t):
        out = {}
        for key, item in v:
            out[key_text(t.key_type, key)] = to_json(t.item_type, item)
        return out
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [to_json(t.value_type, item) for item in v]
    if pa.types.is_timestamp(t):
        # to_pylist gives datetimes; the engine's text needs the ticks.
        raise TypeError("timestamps go through ticks")
    return scalar(t, v)


def column_values(array):
    """A column's values as the engine's JSON values."""
    t = array.type
    if pa.types.is_timestamp(t):
        ticks = array.cast(pa.int64()).to_pylist()
        return [None if x is None else time_text(x, t.unit, t.tz is not None) for x in ticks]
    if pa.types.is_date32(t):
        days = array.cast(pa.int32()).to_pylist()
        return [None if x is None else date_text(x) for x in days]
    if pa.types.is_date64(t):
        millis = array.cast(pa.int64()).to_pylist()
        return [None if x is None else date_text(x // 86400000) for x in millis]
    if pa.types.is_time(t):
        ticks = array.cast(pa.int64() if t.bit_width == 64 else pa.int32()).to_pylist()
        return [None if x is None else scalar(t, x) for x in ticks]
    if pa.types.is_struct(t):
        children = {f.name: column_values(array.field(i)) for i, f in enumerate(t)}
        valid = array.is_valid().to_pylist()
        return [
            {name: values[row] for name, values in children.items()} if valid[row] else None
            for row in range(len(array))
        ]
    return [to_json(t, v) for v in array.to_pylist()]


def primitive(t):
    return not (pa.types.is_nested(t) or pa.types.is_null(t) or pa.types.is_dictionary(t)
                or pa.types.is_duration(t) or pa.types.is_interval(t))


def sql_order(value):
    """Sort key of one engine value of a column (all of one kind): numbers with NaN above all."""
    if value == "NaN":
        return (1, 0.0)
    if value == "Infinity":
        return (0, math.inf)
    if value == "-Infinity":
        return (0, -math.inf)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (0, value)


def aggregates(values):
    present = [v for v in values if v is not None]
    if UNKNOWN in present:
        return {"count": len(present), "min": UNKNOWN, "max": UNKNOWN}
    if not present:
        return {"count": 0, "min": None, "max": None}
    return {"count": len(present), "min": min(present, key=sql_order),
            "max": max(present, key=sql_order)}


# A value pyarrow cannot give: the test compares anything with it.
UNKNOWN = "<beyond pyarrow>"


def int96_columns(path, table):
    """INT96 timestamps as the engine reads them, in microseconds (their writers' precision);
    where pyarrow's microseconds overflow (it wraps around, where the engine does not),
    UNKNOWN."""
    physical = pq.ParquetFile(path).schema
    names = {physical.column(i).path for i in range(len(physical))
             if physical.column(i).physical_type == "INT96"}
    if not names:
        return {}
    micros = pq.read_table(path, coerce_int96_timestamp_unit="us")
    millis = pq.read_table(path, coerce_int96_timestamp_unit="ms")
    columns = {}
    for name in names & set(table.column_names):
        us = micros.column(name).cast(pa.int64()).to_pylist()
        ms = millis.column(name).cast(pa.int64()).to_pylist()
        zoned = micros.schema.field(name).type.tz is not None
        columns[name] = [None if u is None else
                         time_text(u, "us", zoned) if u // 1000 == m else UNKNOWN
                         for u, m in zip(us, ms)]
    return columns


def expect(path):
    try:
        table = pq.read_table(path)
    except Exception as e:  # the oracle itself refuses: the test only asks for a clean outcome
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception:
            rows = None
        return {"readable": False, "reason": str(e), "footerRows": rows}
    table = table.combine_chunks()
    names = [f.name for f in table.schema]
    columns = {name: column_values(table.column(name).combine_chunks()) for name in names}
    columns.update(int96_columns(path, table))
    records = [{name: columns[name][row] for name in names} for row in range(table.num_rows)]
    stats = []
    for field in table.schema:
        if primitive(field.type):
            stats.append({"name": field.name, "type": str(field.type),
                          **aggregates(columns[field.name])})
    return {"readable": True, "rows": table.num_rows, "columns": stats, "records": records}


def write(directory):
    """The same kinds of values written by DuckDB and by Polars."""
    import duckdb
    import polars as pl

    paths = []
    select = """
        SELECT i AS id,
               CAST(i % 7 AS TINYINT) AS tiny,
               CAST(i * 1000 AS BIGINT) AS big,
               CASE WHEN i % 11 = 0 THEN NULL ELSE i / 3.0 END AS ratio,
               CASE WHEN i % 97 = 5 THEN 'nan'::DOUBLE WHEN i % 89 = 3 THEN 'inf'::DOUBLE
                    WHEN i % 83 = 1 THEN '-inf'::DOUBLE ELSE (i % 1000) - 500.5 END AS reading,
               CAST(i % 3 AS FLOAT) + 0.25 AS small_float,
               CAST((i % 5000) * 1.25 AS DECIMAL(12, 2)) AS price,
               'name-' || (i % 265) AS zone,
               CASE WHEN i % 13 = 0 THEN NULL ELSE 'text ' || i END AS note,
               i % 2 = 0 AS even,
               DATE '2024-01-01' + CAST(i % 366 AS INTEGER) AS day,
               TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (i) SECOND AS at,
               [i, i + 1] AS pair,
               {'a': i, 'b': 'x' || i} AS nested
        FROM range(50000) t(i)
    """
    for name, options in [
        ("duckdb-default.parquet", ""),
        ("duckdb-v2-zstd.parquet", ", COMPRESSION zstd, PARQUET_VERSION v2, ROW_GROUP_SIZE 7000"),
        ("duckdb-uncompressed.parquet", ", COMPRESSION uncompressed, ROW_GROUP_SIZE 20000"),
    ]:
        path = f"{directory}/{name}"
        duckdb.sql(f"COPY ({select}) TO '{path}' (FORMAT parquet{options})")
        paths.append(path)
    frame = duckdb.sql(select.replace("[i, i + 1] AS pair,", "").replace(
        ",\n               {'a': i, 'b': 'x' || i} AS nested", "")).pl()
    frame = frame.with_columns(pl.concat_list([pl.col("id"), pl.col("id") + 1]).alias("pair"))
    for name, options in [
        ("polars-default.parquet", {}),
        ("polars-lz4-small-groups.parquet", {"compression": "lz4", "row_group_size": 3000}),
        ("polars-no-statistics.parquet", {"compression": "snappy", "statistics": False}),
    ]:
        path = f"{directory}/{name}"
        frame.write_parquet(path, **options)
        paths.append(path)
    json.dump(paths, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "expect":
        json.dump(expect(sys.argv[2]), sys.stdout, allow_nan=False)
    elif sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        sys.exit(__doc__)
