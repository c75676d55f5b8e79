//! Many objects as one scan, as a user runs `s3flow scan` against MinIO: thousands of small CSV
//! objects with their own headers (byte-order marks, CRLF, quoted newlines, no final newline) and
//! large ones split in many chunks, daily dumps compressed with gzip, zstd and bzip2, JSON Lines
//! by hive folder, and a key list. Every answer is checked against a sequential reading of every
//! object by Python (`scan_objects/dataset.py`).

mod common;

use common::minio::Bucket;
use futures::StreamExt;
use serde_json::{Value, json};

/// Small objects in the dataset (and three large ones among them).
const SMALL_OBJECTS: usize = 10_000;

struct Dataset {
    bucket: Bucket,
    expected: Value,
    folder: std::path::PathBuf,
}

impl Drop for Dataset {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// Writes a dataset with the Python script `tests/scan_objects/<script>` (given the folder, then
/// `args` of the bucket's name), uploads every file to a new bucket, and returns what Python found
/// in it.
async fn dataset(script: &str, args: impl FnOnce(&str) -> Vec<String>) -> Dataset {
    let bucket = Bucket::create(&common::env().await, "objects").await;
    let folder = std::env::temp_dir().join(common::unique("objects"));
    std::fs::create_dir_all(&folder).unwrap();
    let script = format!("{}/tests/scan_objects/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&folder)
        .args(args(&bucket.name))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: Value = serde_json::from_slice(&out.stdout).unwrap();
    let files: Vec<_> = walk(&folder);
    futures::stream::iter(files)
        .map(|path| {
            let key = path
                .strip_prefix(&folder)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let bucket = &bucket;
            async move { bucket.put(&key, std::fs::read(&path).unwrap()).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    Dataset {
        bucket,
        expected,
        folder,
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// `s3flow scan URL --sql SQL EXTRA...`: exit code, stdout, stderr, peak RSS.
async fn scan(data: &Dataset, url: &str, sql: &str, extra: &[&str]) -> (i32, String, String, u64) {
    let mut args: Vec<String> = [url, "--endpoint", &data.bucket.endpoint, "--sql", sql]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    common::cli::run("scan", args).await
}

/// The JSON summary of a scan that must succeed.
async fn summary(data: &Dataset, url: &str, sql: &str, extra: &[&str]) -> (Value, u64) {
    let mut extra = extra.to_vec();
    extra.push("--json");
    let (code, out, err, rss) = scan(data, url, sql, &extra).await;
    assert_eq!(code, 0, "{url}: {err}");
    (serde_json::from_str(&out).unwrap(), rss)
}

/// The keys of the row output parts under `prefix`, in key order.
async fn part_keys(bucket: &Bucket, prefix: &str) -> Vec<String> {
    let part = format!("{prefix}part-");
    let keys = bucket.keys(prefix).await;
    keys.into_iter().filter(|k| k.starts_with(&part)).collect()
}

/// The records of the CSV parts under `prefix`, in key order, each part's header row left out.
async fn parts_rows(bucket: &Bucket, prefix: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for key in part_keys(bucket, prefix).await {
        let body = bucket.get(&key).await;
        let mut reader = csv::Reader::from_reader(&body[..]);
        for record in reader.records() {
            rows.push(record.unwrap().iter().map(str::to_string).collect());
        }
    }
    rows
}

const CSV_SQL: &str = "SELECT COUNT(*) AS n, SUM(amount) AS total, MIN(amount) AS low, \
                       MAX(city) AS last FROM S3Object";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn many_objects_scan_as_one_with_every_record_once() {
    let data = dataset("dataset.py", |_| vec![SMALL_OBJECTS.to_string()]).await;
    let expected = &data.expected;
    let b = &data.bucket.name;

    // Thousands of small objects and three large ones, by a glob, in 64 KiB chunks.
    let started = std::time::Instant::now();
    let (small, rss) = summary(
        &data,
        &format!("s3://{b}/small/part-*.csv"),
        CSV_SQL,
        &["--chunk-size", "64Ki", "--parallelism", "16"],
    )
    .await;
    eprintln!(
        "{} objects in {:.1} s, peak RSS {} MiB",
        small["objects"]["scanned"],
        started.elapsed().as_secs_f64(),
        rss >> 20
    );
    assert_eq!(small["result"], expected["small"], "the small objects");
    assert_eq!(small["objects"]["scanned"], expected["small_objects"]);
    assert_eq!(
        small["chunks"], expected["small_chunks"],
        "every object with records in 64 KiB chunks, the large ones in many"
    );
    assert!(rss < 256 << 20, "peak RSS {} MiB", rss >> 20);

    // A row query prints its rows in key order, with one header row.
    let (code, out, err, _) = scan(
        &data,
        &format!("s3://{b}/small/"),
        "SELECT id, note FROM S3Object s WHERE s.amount > 990",
        &["--chunk-size", "64Ki"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, expected["small_rows"].as_str().unwrap(), "rows");

    // The same rows written to S3: small objects share a part (as the operator packs them into a
    // chunk), the large ones' chunks write a part each, and the parts hold the rows in key order.
    let (packed, _) = summary(
        &data,
        &format!("s3://{b}/small/"),
        "SELECT id, note FROM S3Object s WHERE s.amount > 990",
        &["--output", &format!("s3://{b}/packed/")],
    )
    .await;
    let printed = expected["small_rows"].as_str().unwrap().as_bytes();
    let wanted: Vec<Vec<String>> = csv::Reader::from_reader(printed)
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    assert_eq!(parts_rows(&data.bucket, "packed/").await, wanted, "packed");
    let manifest: Value =
        serde_json::from_slice(&data.bucket.get("packed/manifest.json").await).unwrap();
    let lines = data.bucket.manifest_lines(&manifest, "chunks").await;
    let pieces: Vec<usize> = lines
        .iter()
        .map(|l| l["pieces"].as_array().map_or(1, Vec::len))
        .collect();
    assert_eq!(lines.len() as u64, packed["chunks"].as_u64().unwrap());
    let parts = part_keys(&data.bucket, "packed/").await;
    assert!(
        parts.len() * 20 < SMALL_OBJECTS,
        "{} parts for {SMALL_OBJECTS} objects",
        parts.len()
    );
    assert!(pieces.iter().any(|&n| n > 20), "objects a part: {pieces:?}");
    let listed: Vec<String> = lines
        .iter()
        .filter_map(|l| l["part"].as_str().map(str::to_string))
        .collect();
    assert_eq!(listed, parts, "the manifest names every part, in order");
    // A line per object, in key order: those the chunks read (a part's pieces, or a large
    // object's chunks), and those of a header row only, which have no chunk.
    let objects = data.bucket.manifest_lines(&manifest, "objects").await;
    let mut read: Vec<&str> = Vec::new();
    for line in &lines {
        match line["pieces"].as_array() {
            Some(pieces) => read.extend(pieces.iter().map(|p| p["key"].as_str().unwrap())),
            None => read.push(line["key"].as_str().unwrap()),
        }
    }
    read.dedup();
    let keys: Vec<&str> = objects.iter().map(|o| o["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys.len() as u64,
        expected["small_objects"].as_u64().unwrap()
    );
    assert!(
        keys.is_sorted() && keys.windows(2).all(|w| w[0] < w[1]),
        "in key order, once"
    );
    let in_chunks: std::collections::BTreeSet<&str> = read.iter().copied().collect();
    let chunkless: Vec<&Value> = objects
        .iter()
        .filter(|o| !in_chunks.contains(o["key"].as_str().unwrap()))
        .collect();
    assert_eq!(
        keys.len() - chunkless.len(),
        read.len(),
        "the objects of the chunks"
    );
    assert!(!chunkless.is_empty(), "objects of a header row only");
    assert!(
        chunkless
            .iter()
            .all(|o| o["records"] == 0 && o["status"] == "scanned"),
        "{chunkless:?}"
    );
    let rows: u64 = objects.iter().map(|o| o["rows"].as_u64().unwrap()).sum();
    assert_eq!(rows, wanted.len() as u64, "rows of the objects");

    // Rows written to S3: each object's parts numbered on from the previous object's, so that
    // they hold the rows in key order, and a manifest of every chunk; LIMIT keeps the first rows.
    let large = format!("s3://{b}/small/part-*-large.csv");
    let wanted: Vec<Vec<String>> = serde_json::from_value(expected["large_rows"].clone()).unwrap();
    assert!(wanted.len() > 100, "{} rows to write", wanted.len());
    let mut chunks_merged = Vec::new();
    for (limit, prefix) in [(None, "out/"), (Some(25), "limited/")] {
        let sql = match limit {
            None => "SELECT id, note FROM S3Object s WHERE s.amount > 990".to_string(),
            Some(n) => format!("SELECT id, note FROM S3Object s WHERE s.amount > 990 LIMIT {n}"),
        };
        let to = format!("s3://{b}/{prefix}");
        let (written, _) = summary(
            &data,
            &large,
            &sql,
            &["--chunk-size", "64Ki", "--output", &to],
        )
        .await;
        let wanted = &wanted[..limit.unwrap_or(wanted.len())];
        assert_eq!(parts_rows(&data.bucket, prefix).await, wanted, "{sql}");
        assert_eq!(written["rows"], wanted.len());
        let manifest = format!("{prefix}manifest.json");
        assert_eq!(written["manifest"], format!("s3://{b}/{manifest}"));
        let manifest: Value = serde_json::from_slice(&data.bucket.get(&manifest).await).unwrap();
        let lines = data.bucket.manifest_lines(&manifest, "chunks").await;
        assert_eq!(
            lines.len() as u64,
            written["chunks"].as_u64().unwrap(),
            "a line per chunk"
        );
        chunks_merged.push(lines.len());
        let rows: u64 = lines.iter().map(|l| l["rows"].as_u64().unwrap()).sum();
        assert_eq!(
            (rows, &manifest["rows"]),
            (wanted.len() as u64, &written["rows"])
        );
        let parts: Vec<&str> = lines.iter().filter_map(|l| l["part"].as_str()).collect();
        assert_eq!(
            parts.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            part_keys(&data.bucket, prefix).await,
            "the manifest names every part left, in order"
        );
        // A line per object read, in key order, its chunks' counts added up.
        let objects = data.bucket.manifest_lines(&manifest, "objects").await;
        let keys: Vec<&str> = objects.iter().map(|o| o["key"].as_str().unwrap()).collect();
        let chunk_keys: std::collections::BTreeSet<&str> =
            lines.iter().map(|l| l["key"].as_str().unwrap()).collect();
        assert_eq!(keys, chunk_keys.into_iter().collect::<Vec<_>>());
        for (field, total) in [
            ("records", &manifest["records"]),
            ("rows", &manifest["rows"]),
        ] {
            let sum: u64 = objects.iter().map(|o| o[field].as_u64().unwrap()).sum();
            assert_eq!(&Value::from(sum), total, "{field} of the objects");
        }
        assert!(objects.iter().all(|o| o["status"] == "scanned"));
    }
    assert!(
        chunks_merged[1] < chunks_merged[0],
        "LIMIT stops the scan once its rows are written: {chunks_merged:?} chunks"
    );

    // Daily dumps compressed with gzip, zstd and bzip2, by brace alternatives.
    let (daily, _) = summary(
        &data,
        &format!("s3://{b}/daily/2024-06-0?.csv.{{gz,zst,bz2}}"),
        CSV_SQL,
        &[],
    )
    .await;
    assert_eq!(daily["result"], expected["daily"], "the daily dumps");
    assert_eq!(daily["objects"]["scanned"], 9);
    assert_eq!(daily["chunks"], 9, "a compressed object is one chunk");

    // JSON Lines in hive folders, `**` reaching into them.
    let events = format!("s3://{b}/events/**/*.jsonl");
    let (all, _) = summary(
        &data,
        &events,
        "SELECT COUNT(*) AS n, SUM(ms) AS ms FROM S3Object",
        &["--chunk-size", "100"],
    )
    .await;
    assert_eq!(all["result"], expected["events"], "the events");
    assert_eq!(all["objects"]["scanned"], 6);
    let (clicks, _) = summary(
        &data,
        &events,
        "SELECT COUNT(*) AS n FROM S3Object s WHERE s.kind = 'click'",
        &[],
    )
    .await;
    assert_eq!(clicks["result"], expected["clicks"], "the clicks");

    // An explicit list of keys, one per line (CRLF too).
    let list = data.folder.join("keys.txt");
    let keys: Vec<&str> = expected["chosen_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    std::fs::write(&list, keys.join("\r\n")).unwrap();
    let (chosen, _) = summary(
        &data,
        &format!("s3://{b}"),
        CSV_SQL,
        &["--keys-from", list.to_str().unwrap()],
    )
    .await;
    assert_eq!(chosen["objects"]["scanned"], keys.len());
    assert_eq!(chosen["result"], expected["chosen"], "the listed keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn bad_selections_fail_with_their_reason() {
    let bucket = Bucket::create(&common::env().await, "objects-bad").await;
    for i in 0..3 {
        bucket
            .put(
                &format!("in/{i}.csv"),
                format!("id,v\n{i},1\n").into_bytes(),
            )
            .await;
    }
    bucket.put("in/3.csv", b"id,other\n3,1\n".to_vec()).await;
    bucket.put("in/folder/", Vec::new()).await;
    let b = &bucket.name;
    let run = |url: String, extra: Vec<&'static str>| {
        let endpoint = bucket.endpoint.clone();
        async move {
            let mut args = vec![
                url,
                "--endpoint".into(),
                endpoint,
                "--sql".into(),
                "SELECT COUNT(*) AS n FROM S3Object".into(),
            ];
            args.extend(extra.into_iter().map(String::from));
            common::cli::run("scan", args).await
        }
    };
    // Nothing matches: NoObjects, or an empty answer when allowed.
    let (code, _, err, _) = run(format!("s3://{b}/in/*.parquet"), vec![]).await;
    assert_ne!(code, 0);
    assert!(err.contains("(NoObjects)"), "{err}");
    let (code, out, err, _) = run(
        format!("s3://{b}/in/*.parquet"),
        vec!["--allow-empty", "--json"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let empty: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(empty["result"], json!({"n": 0}));
    assert_eq!(
        empty["objects"],
        json!({"matched": 0, "pruned": 0, "skipped": 0, "scanned": 0})
    );
    // More objects than allowed: TooManyObjects, before any is read.
    let (code, _, err, _) = run(format!("s3://{b}/in/?.csv"), vec!["--max-objects", "2"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("(TooManyObjects)"), "{err}");
    // Another header row: HeaderMismatch naming both objects.
    let (code, _, err, _) = run(format!("s3://{b}/in/"), vec![]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("(HeaderMismatch)") && err.contains("in/3.csv") && err.contains("in/0.csv"),
        "{err}"
    );
    // The folder marker is skipped: the first three objects are exactly three.
    let (code, out, err, _) = run(format!("s3://{b}/in/[0-2]*"), vec!["--json"]).await;
    assert_eq!(code, 0, "{err}");
    let three: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (three["objects"]["scanned"].clone(), three["result"].clone()),
        (json!(3), json!({"n": 3}))
    );
    // A broken glob and a misused key list are refused before any request.
    let (code, _, err, _) = run(format!("s3://{b}/in/{{a,b"), vec![]).await;
    assert_ne!(code, 0);
    assert!(err.contains("never closed"), "{err}");
    let (code, _, err, _) = run(format!("s3://{b}/in/"), vec!["--keys-from", "/dev/null"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("name the bucket only"), "{err}");
    // A compressed object whose stream breaks off fails the scan, naming it and its compression.
    let mut csv = b"id,v\n".to_vec();
    for i in 0..40_000 {
        csv.extend_from_slice(format!("{i},{}\n", i * 7919 % 10007).as_bytes());
    }
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gzip, &csv).unwrap();
    let packed = gzip.finish().unwrap();
    bucket.put("broken/1.csv.gz", packed.clone()).await;
    bucket
        .put("broken/2.csv.gz", packed[..packed.len() / 2].to_vec())
        .await;
    let (code, _, err, _) = run(format!("s3://{b}/broken/"), vec![]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("s3://{b}/broken/2.csv.gz (gzip)"))
            && err.contains("(InvalidObject)"),
        "{err}"
    );

    // Rows written where the glob lists would be read back as they are written.
    let into: &'static str = format!("s3://{b}/in/out/").leak();
    let (code, _, err, _) = run(format!("s3://{b}/in/"), vec!["--output", into]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("lies where") && err.contains("(InvalidScan)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn hive_partitions_are_columns_and_prune_objects_unread() {
    let data = dataset("hive.py", |bucket| vec![bucket.to_string()]).await;
    data.bucket
        .put("conflict/year=2024/a.csv", b"year,v\n2024,1\n".to_vec())
        .await;
    let (expected, b) = (&data.expected, &data.bucket.name);
    let trips = format!("s3://{b}/trips/**/*.parquet");

    // The WHERE on the partitions reads only the objects it can match: pyarrow's answer.
    let (kept, _) = summary(
        &data,
        &trips,
        "SELECT COUNT(*) AS n, SUM(fare) AS total, MAX(id) AS top FROM S3Object \
         WHERE year = 2024 AND month <= 3",
        &[],
    )
    .await;
    assert_eq!(kept["result"], expected["kept"], "pruned query");
    let files = expected["files"].as_u64().unwrap();
    let kept_files = expected["kept_files"].as_u64().unwrap();
    assert_eq!(
        kept["objects"],
        json!({"matched": files, "pruned": files - kept_files, "skipped": 0, "scanned": kept_files}),
        "objects read"
    );
    // A glob naming the partition folders lists only those the WHERE clause can match.
    let (walked, _) = summary(
        &data,
        &format!("s3://{b}/trips/year=*/month=*/*.parquet"),
        "SELECT COUNT(*) AS n, SUM(fare) AS total, MAX(id) AS top FROM S3Object \
         WHERE year = 2024 AND month <= 3",
        &[],
    )
    .await;
    assert_eq!(walked["result"], expected["kept"], "query by folder");
    assert_eq!(
        walked["objects"],
        json!({"matched": kept_files, "pruned": 0, "skipped": 0, "scanned": kept_files,
            "prunedFolders": expected["pruned_folders"]}),
        "folders listed"
    );
    // The operator walks the same folders in pages of any size, each resumed from the position
    // the one before gave: every kept object once, in key order, each ruled-out folder counted
    // once.
    let kept_keys: Vec<&str> = expected["kept_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    for page_rows in [1, 2, 5, 1000] {
        let (keys, pruned) =
            folder_pages(&data.bucket, "trips/year=*/month=*/*.parquet", page_rows).await;
        assert_eq!(keys, kept_keys, "in pages of {page_rows}");
        assert_eq!(
            pruned,
            expected["pruned_folders"].as_u64().unwrap(),
            "in pages of {page_rows}"
        );
    }

    // Every folder ruled out: an empty answer, not NoObjects.
    let (none, _) = summary(
        &data,
        &format!("s3://{b}/trips/year=*/month=*/*.parquet"),
        "SELECT COUNT(*) AS n FROM S3Object WHERE year = 1999",
        &[],
    )
    .await;
    assert_eq!(none["result"], json!({"n": 0}));
    assert_eq!(none["objects"]["prunedFolders"], 2, "both years");
    let (all, _) = summary(&data, &trips, "SELECT COUNT(*) AS n FROM S3Object", &[]).await;
    assert_eq!(all["result"], expected["all"]);
    assert_eq!(all["objects"]["pruned"], 0);

    // Virtual columns, selectable and aggregated like any other.
    let (virtuals, _) = summary(
        &data,
        &trips,
        "SELECT MIN(_path) AS first, MAX(_size) AS largest, COUNT(*) AS n FROM S3Object \
         WHERE _file = 'part-0.parquet'",
        &[],
    )
    .await;
    assert_eq!(
        virtuals["result"],
        json!({"first": expected["first_path"], "largest": expected["largest"], "n": expected["all"]["n"]})
    );

    // `_mtime` is each object's LastModified as S3 lists it (milliseconds, UTC): the oldest and
    // newest of the glob's objects, and every one dated.
    let (times, _) = summary(
        &data,
        &trips,
        "SELECT MIN(_mtime) AS oldest, MAX(_mtime) AS newest, COUNT(_mtime) AS dated, \
         COUNT(*) AS n FROM S3Object WHERE _mtime >= '2000-01-01T00:00:00.000Z'",
        &[],
    )
    .await;
    let listed = data
        .bucket
        .s3
        .list_objects_v2()
        .bucket(b)
        .prefix("trips/")
        .send()
        .await
        .unwrap();
    let mut modified: Vec<String> = listed
        .contents()
        .iter()
        .filter(|o| o.key().is_some_and(|k| k.ends_with(".parquet")))
        .map(|o| s3flow::scan::plan::s3_time(o.last_modified().unwrap()).unwrap())
        .collect();
    modified.sort();
    assert_eq!(
        times["result"],
        json!({"oldest": modified[0], "newest": modified[modified.len() - 1],
            "dated": expected["all"]["n"], "n": expected["all"]["n"]})
    );
    assert!(
        modified[0].ends_with('Z') && modified[0].len() == 24,
        "{modified:?}"
    );

    // Rows carry their partition values.
    let (code, out, err, _) = scan(
        &data,
        &trips,
        "SELECT year, month, id FROM S3Object WHERE id = 47993",
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("year,month,id\n{}\n", expected["row"].as_str().unwrap())
    );

    // Without partitions, `year` is no column of these files; a partition named as a real column
    // is refused.
    let (code, _, err, _) = scan(
        &data,
        &trips,
        "SELECT COUNT(*) FROM S3Object WHERE year = 2024",
        &["--hive-partitioning", "disabled"],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("no column `year`"), "{err}");
    let (code, _, err, _) = scan(
        &data,
        &format!("s3://{b}/conflict/"),
        "SELECT COUNT(*) FROM S3Object",
        &[],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("both a hive partition"), "{err}");
}

/// The keys `glob` selects with `WHERE year = 2024 AND month <= 3`, walked folder by folder in
/// pages of `rows` keys as the operator lists them in slices, and the folders ruled out.
async fn folder_pages(bucket: &Bucket, glob: &str, rows: usize) -> (Vec<String>, u64) {
    use s3flow::scan::objects::{
        FolderPruning, Glob, ListingCursor, ObjectSource, Selection, list_page,
    };
    let pruned = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let query = s3flow::scan::sql::compile(
        "SELECT COUNT(*) FROM S3Object WHERE year = 2024 AND month <= 3",
        &s3flow::scan::sql::Columns::Named,
    )
    .unwrap();
    let selection = Selection {
        bucket: bucket.name.clone(),
        source: ObjectSource::Glob(Glob::new(glob).unwrap()),
        max_objects: 1000,
        allow_empty: false,
        changes: Default::default(),
        folders: Some(FolderPruning {
            query,
            pruned: pruned.clone(),
        }),
    };
    let (mut keys, mut cursor) = (Vec::new(), Some(ListingCursor::default()));
    for _ in 0..10_000 {
        let Some(at) = cursor else {
            return (keys, pruned.load(std::sync::atomic::Ordering::Relaxed));
        };
        let (page, next) = list_page(&bucket.s3, &selection, &at, rows).await.unwrap();
        assert!(page.len() <= rows);
        keys.extend(page.into_iter().map(|object| object.key));
        assert!(
            next.as_ref() != Some(&at),
            "{glob}: a page that does not move on"
        );
        cursor = next;
    }
    panic!("{glob}: the pages do not end")
}

/// The keys the manifest `key` names, listed in pages of `rows` rows as the operator lists them
/// in slices, each page from the cursor the one before gave.
async fn manifest_pages(bucket: &Bucket, key: &str, rows: usize) -> Vec<String> {
    use s3flow::scan::objects::{ListingCursor, ManifestRef, ObjectSource, Selection, list_page};
    let selection = Selection {
        bucket: bucket.name.clone(),
        source: ObjectSource::Manifest(ManifestRef {
            bucket: bucket.name.clone(),
            key: key.into(),
            etag: None,
        }),
        max_objects: 1000,
        allow_empty: false,
        changes: Default::default(),
        folders: None,
    };
    let (mut keys, mut cursor) = (Vec::new(), Some(ListingCursor::default()));
    while let Some(at) = cursor {
        let (page, next) = list_page(&bucket.s3, &selection, &at, rows).await.unwrap();
        assert!(page.len() <= rows);
        keys.extend(page.into_iter().map(|object| object.key));
        assert!(keys.len() <= 1000, "{key}: the pages do not end");
        cursor = next;
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn manifests_name_the_objects_as_aws_writes_them() {
    let data = dataset("manifests.py", |bucket| vec![bucket.to_string()]).await;
    let (expected, b) = (&data.expected, &data.bucket.name);
    let sql = "SELECT COUNT(*) AS n, SUM(v) AS total FROM S3Object";
    let url = format!("s3://{b}");
    let manifest = |key: &str| format!("s3://{b}/{key}");

    // A Batch Operations CSV: keys URL-encoded (spaces as +), each object asked for by HEAD.
    let (batch, _) = summary(
        &data,
        &url,
        sql,
        &["--manifest", &manifest("manifests/batch.csv")],
    )
    .await;
    assert_eq!(batch["result"], expected["batch"], "batch manifest");
    assert_eq!(batch["objects"]["scanned"], expected["batch_objects"]);

    // An Inventory: its gzip CSV data file gives sizes and ETags, and every read is pinned to them.
    let inventory = manifest("inventory/manifest.json");
    let (listed, _) = summary(&data, &url, sql, &["--manifest", &inventory]).await;
    assert_eq!(listed["result"], expected["inventory"], "inventory");
    assert_eq!(listed["objects"]["scanned"], expected["inventory_objects"]);

    // Listed in pages of any size, resumed from the cursor (a byte offset in the data file, the
    // manifest's ETag): every object once, in the manifest's order.
    for (key, keys) in [
        ("manifests/batch.csv", &expected["batch_keys"]),
        ("inventory/manifest.json", &expected["inventory_keys"]),
    ] {
        let keys: Vec<&str> = keys
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        for page_rows in [1, 2, 3, 7, 1000] {
            assert_eq!(
                manifest_pages(&data.bucket, key, page_rows).await,
                keys,
                "{key} in pages of {page_rows}"
            );
        }
    }

    // A manifest pinned to another ETag, and an object replaced after the Inventory was taken,
    // fail as ObjectChanged; a manifest naming another bucket is refused.
    let (code, _, err, _) = scan(
        &data,
        &url,
        sql,
        &["--manifest", &inventory, "--manifest-etag", "\"0000\""],
    )
    .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("(ObjectChanged)") && err.contains("pins"),
        "{err}"
    );
    let replaced = expected["inventory_first"].as_str().unwrap();
    data.bucket.put(replaced, b"id,v\n1,1000\n".to_vec()).await;
    let (code, _, err, _) = scan(&data, &url, sql, &["--manifest", &inventory]).await;
    assert_ne!(code, 0);
    assert!(err.contains("(ObjectChanged)"), "{err}");
    // Skipped when asked, up to a number of objects: none of its records count, and it is named.
    let skip = ["--on-object-change", "skip", "--max-failed-objects", "1"];
    let (skipped, _) = summary(
        &data,
        &url,
        sql,
        &[&["--manifest", inventory.as_str()][..], &skip].concat(),
    )
    .await;
    assert_eq!(skipped["result"], expected["inventory_but_first"]);
    assert_eq!(skipped["objects"]["skipped"], 1);
    assert_eq!(skipped["skipped"][0]["key"], expected["inventory_first"]);
    assert_eq!(skipped["skipped"][0]["reason"], "ObjectChanged");
    let (code, _, err, _) = scan(
        &data,
        &url,
        sql,
        &["--manifest", &inventory, "--on-object-change", "skip"],
    )
    .await;
    assert_ne!(code, 0, "skipping none by default");
    assert!(err.contains("more than 0 objects"), "{err}");
    // A Batch Operations row whose object is gone: ObjectNotFound, or skipped.
    let gone = expected["batch_first"].as_str().unwrap();
    data.bucket
        .s3
        .delete_object()
        .bucket(b)
        .key(gone)
        .send()
        .await
        .unwrap();
    let batch_manifest = manifest("manifests/batch.csv");
    let (code, _, err, _) = scan(&data, &url, sql, &["--manifest", &batch_manifest]).await;
    assert_ne!(code, 0);
    assert!(err.contains("(ObjectNotFound)"), "{err}");
    let (skipped, _) = summary(
        &data,
        &url,
        sql,
        &[&["--manifest", batch_manifest.as_str()][..], &skip].concat(),
    )
    .await;
    assert_eq!(skipped["result"], expected["batch_but_first"]);
    assert_eq!(skipped["skipped"][0]["reason"], "ObjectNotFound");
    data.bucket
        .put(
            "manifests/other.csv",
            b"another-bucket,data/x.csv\n".to_vec(),
        )
        .await;
    let (code, _, err, _) = scan(
        &data,
        &url,
        sql,
        &["--manifest", &manifest("manifests/other.csv")],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("the scan reads bucket"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn union_by_name_binds_columns_of_objects_that_differ() {
    let data = dataset("union.py", |_| Vec::new()).await;
    let (expected, b) = (&data.expected, &data.bucket.name);
    let sql = "SELECT COUNT(*) AS n, SUM(v) AS total, COUNT(v) AS with_v FROM S3Object";
    for (format, glob) in [
        ("csv", "union/csv/*.csv"),
        ("parquet", "union/pq/*.parquet"),
    ] {
        let url = format!("s3://{b}/{glob}");
        let (union, _) = summary(&data, &url, sql, &["--union-by-name"]).await;
        assert_eq!(union["result"], expected[format], "{format} by name");
        assert_eq!(
            union["missingColumns"],
            expected[format!("{format}_missing")],
            "{format}: objects lacking a column"
        );
        // Without it, the objects' columns must agree.
        let (code, _, err, _) = scan(&data, &url, sql, &[]).await;
        assert_ne!(code, 0, "{format}");
        assert!(err.contains("(HeaderMismatch)"), "{format}: {err}");
        let (code, _, err, _) =
            scan(&data, &url, "SELECT * FROM S3Object", &["--union-by-name"]).await;
        assert_ne!(code, 0, "{format}");
        assert!(err.contains("name the columns"), "{format}: {err}");
    }
}

/// An object replaced between its planning and its chunks' reads is left out whole when the scan
/// skips changed objects (its records merged so far dropped), and fails the scan otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn an_object_replaced_after_planning_is_skipped_whole_or_fails_the_scan() {
    use s3flow::scan::local::{Counters, scan_objects};
    use s3flow::scan::objects::{ObjectChanges, OnObjectChange};
    use s3flow::scan::{InputFormat, ObjectVersion, PlanRequest};
    use s3flow::shutdown::Stop;

    let bucket = Bucket::create(&common::env().await, "objects-replaced").await;
    let rows = |n: usize| {
        let mut text = String::from("id,v\n");
        for i in 0..n {
            text.push_str(&format!("{i},{}\n", i % 10));
        }
        text.into_bytes()
    };
    bucket.put("a.csv", rows(5000)).await;
    bucket.put("b.csv", rows(300)).await;
    let request = PlanRequest {
        bucket: bucket.name.clone(),
        key: String::new(),
        format: InputFormat::Csv {
            delimiter: b',',
            quote: b'"',
            header: true,
        },
        expected_headers: None,
        chunk_size: 4096,
        max_record_size: 1 << 20,
    };
    let mut layouts = Vec::new();
    for key in ["a.csv", "b.csv"] {
        let (size, etag) = s3flow::s3::object_version(&bucket.s3, &bucket.name, key)
            .await
            .unwrap();
        let version = ObjectVersion::pinned(&bucket.name, key, size, etag).unwrap();
        layouts.push(
            s3flow::scan::plan::plan_object(&bucket.s3, &request, version)
                .await
                .unwrap(),
        );
    }
    assert!(layouts[0].chunk_count() > 4, "a.csv is many chunks");
    // The same size, another last value: another version.
    let mut replaced = rows(5000);
    let last = replaced.len() - 2;
    replaced[last] = b'0';
    bucket.put("a.csv", replaced).await;
    let sql = "SELECT COUNT(*) AS n, SUM(v) AS total FROM S3Object";
    let query = layouts[0].compile(sql).unwrap();
    let run = |policy, max| {
        let counters = Counters {
            changes: ObjectChanges::new(policy, max),
            ..Counters::default()
        };
        let layouts = futures::stream::iter(layouts.clone().into_iter().map(Ok));
        let s3 = bucket.s3.clone();
        let query = query.clone();
        async move {
            let summary = scan_objects(
                &s3,
                layouts,
                (&query, sql),
                None,
                (4, Stop::never()),
                &counters,
            )
            .await;
            summary.map(|s| serde_json::to_value(&s).unwrap())
        }
    };
    let skipped = run(OnObjectChange::Skip, 1).await.unwrap();
    let b_total: u64 = (0..300u64).map(|i| i % 10).sum();
    assert_eq!(skipped["result"], json!({"n": 300, "total": b_total}));
    assert_eq!(skipped["objects"]["skipped"], 1);
    assert_eq!(skipped["objects"]["scanned"], 1);
    assert_eq!(skipped["skipped"][0]["key"], "a.csv");
    let failed = run(OnObjectChange::Fail, 1).await.unwrap_err();
    assert_eq!(failed.reason(), "ObjectChanged", "{failed}");
}
