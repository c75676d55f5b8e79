"""How the benchmark's peers reach MinIO: Polars' storage options, and a DuckDB connection with
the httpfs extension (from the duckdb-ext-httpfs package) and the credentials as a secret."""
import os


def polars_options(endpoint):
    """Polars' (object_store's) options for MinIO at ENDPOINT, credentials from the environment."""
    return {
        "aws_endpoint_url": endpoint,
        "aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"],
        "aws_region": "us-east-1",
        "aws_allow_http": "true",
    }


def duckdb_connection(endpoint):
    """A DuckDB connection that reads s3:// URLs from MinIO at ENDPOINT."""
    import duckdb
    import duckdb_ext

    db = duckdb.connect()
    extension = os.path.join(list(duckdb_ext.__path__)[0], "extensions", f"v{duckdb.__version__}",
                             "linux_amd64", "httpfs.duckdb_extension")
    db.execute(f"LOAD '{extension}'")
    host = endpoint.split("://", 1)[1]
    db.execute(f"""CREATE SECRET (TYPE s3, KEY_ID '{os.environ["AWS_ACCESS_KEY_ID"]}',
        SECRET '{os.environ["AWS_SECRET_ACCESS_KEY"]}', ENDPOINT '{host}', URL_STYLE 'path',
        USE_SSL false, REGION 'us-east-1')""")
    return db
