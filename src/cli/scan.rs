//! `s3flow scan s3://bucket/key --sql ...`: the scan engine on one machine, chunks as local tasks;
//! a glob (`s3://bucket/logs/*.csv.gz`), a folder or `--keys-from` scans many objects as one.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use s3flow::s3::S3Url;
use s3flow::scan::local::{Counters, ScanSummary, print_rows, scan, scan_objects};
use s3flow::scan::objects::{
    self, FolderPruning, Glob, HivePartitioning, ManifestRef, ObjectChanges, ObjectSource,
    OnObjectChange, Planning, Selection, is_glob,
};
use s3flow::scan::plan::{DetectedFormat, detect_format};
use s3flow::scan::sql::{Columns, compile};
use s3flow::scan::{InputFormat, Layout, Output, OutputFormat, PlanRequest, plan};
use s3flow::shutdown::{self, Stop};
use s3flow::size::parse_size;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    /// Parquet when the object starts with PAR1, else by its name's extension, else CSV.
    Auto,
    Csv,
    Jsonl,
    Parquet,
}

#[derive(Args)]
pub(crate) struct ScanArgs {
    /// What to scan: one object (s3://bucket/key); every object a glob matches
    /// (s3://bucket/logs/**/*.csv: `*` within a folder, `**` any depth, `?`, `[...]`, `{a,b}`);
    /// every object under a folder (s3://bucket/logs/); or, with --keys-from or --manifest,
    /// s3://bucket.
    #[arg(value_parser = S3Url::location)]
    object: S3Url,
    /// A file naming the keys to scan, one per line (at most 1,000), in the URL's bucket.
    #[arg(long, conflicts_with = "manifest")]
    keys_from: Option<std::path::PathBuf>,
    /// A manifest of the objects to scan, all in the URL's bucket: an S3 Batch Operations CSV
    /// (bucket,key with URL-encoded keys) or an S3 Inventory manifest.json (CSV data files).
    #[arg(long, value_parser = S3Url::object)]
    manifest: Option<S3Url>,
    /// The ETag the manifest must have.
    #[arg(long, requires = "manifest")]
    manifest_etag: Option<String>,
    /// A glob or folder selecting more objects than this fails (TooManyObjects) before any is read.
    #[arg(long, default_value_t = objects::DEFAULT_MAX_OBJECTS)]
    max_objects: u64,
    /// A glob or folder selecting no object is an empty scan, not a failure (NoObjects).
    #[arg(long)]
    allow_empty: bool,
    /// Whether key=value folders of the keys (year=2024/) are columns: auto (when keys have
    /// them), enabled (every object must), disabled. The WHERE clause on them prunes objects.
    #[arg(long, value_enum, default_value = "auto")]
    hive_partitioning: HiveArg,
    /// Bind columns by name: objects may have different columns, one an object lacks is NULL in
    /// its records (else every object must have the first object's columns).
    #[arg(long)]
    union_by_name: bool,
    /// An object changed or deleted since it was listed: fail the scan, or skip it (none of its
    /// records count; a row query printing rows skips it only before its first row).
    #[arg(long, value_enum, default_value = "fail")]
    on_object_change: ChangeArg,
    /// Most objects skipped by --on-object-change skip; one more fails the scan.
    #[arg(long, default_value_t = 0)]
    max_failed_objects: u64,
    /// The query: SELECT * | columns | aggregates FROM S3Object s [WHERE ...] [LIMIT n].
    #[arg(long)]
    sql: String,
    /// Format of the object.
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    /// CSV: the object has no header row (columns are _1, _2, ...).
    #[arg(long)]
    no_header: bool,
    /// CSV field delimiter (one byte).
    #[arg(long, default_value = ",")]
    delimiter: char,
    /// CSV quote character (one byte).
    #[arg(long, default_value = "\"")]
    quote: char,
    /// Endpoint of an S3-compatible store (path-style addressing is then used).
    #[arg(long)]
    endpoint: Option<String>,
    /// Region to sign for (default: the AWS chain's, else us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// Bytes per chunk, with an optional Ki/Mi/Gi suffix; any size gives the same answer.
    #[arg(long, default_value = "64Mi")]
    chunk_size: String,
    /// Chunks processed at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    parallelism: u16,
    /// Longest record read (at least 1Ki); a longer one fails the scan as BadData naming its
    /// offset, instead of growing memory.
    #[arg(long, default_value = "64Mi")]
    max_record_size: String,
    /// Write selected rows as part files (and a manifest) under s3://bucket/prefix.
    #[arg(long, value_parser = S3Url::prefix)]
    output: Option<S3Url>,
    /// Format of the output parts (default: the object's; CSV for Parquet).
    #[arg(long, value_enum)]
    output_format: Option<OutputArg>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds without a byte from S3 before a read counts as stalled; also the window over which
    /// --min-bytes-per-second is judged.
    #[arg(long, default_value_t = 60)]
    stall_timeout: u64,
    /// An object read slower than this many bytes per second of waiting fails as SourceStalled
    /// (0: no floor).
    #[arg(long, default_value_t = 1024)]
    min_bytes_per_second: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum ChangeArg {
    Fail,
    Skip,
}

#[derive(Clone, Copy, ValueEnum)]
enum HiveArg {
    Auto,
    Enabled,
    Disabled,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputArg {
    Csv,
    Jsonl,
    /// Parquet of the selected columns (Parquet objects only).
    Parquet,
}

fn byte(c: char, what: &str) -> anyhow::Result<u8> {
    u8::try_from(c)
        .ok()
        .filter(u8::is_ascii)
        .ok_or_else(|| anyhow::anyhow!("--{what} must be one ASCII character, not {c:?}"))
}

/// The planning request and row output the arguments ask for, checked before any request but
/// the one that detects an `auto` format (`detected`).
fn request(
    args: &ScanArgs,
    detected: DetectedFormat,
) -> anyhow::Result<(PlanRequest, Option<Output>)> {
    let format = match detected {
        DetectedFormat::Csv => InputFormat::Csv {
            delimiter: byte(args.delimiter, "delimiter")?,
            quote: byte(args.quote, "quote")?,
            header: !args.no_header,
        },
        DetectedFormat::JsonLines => InputFormat::JsonLines,
        DetectedFormat::Parquet => InputFormat::Parquet,
    };
    let output = args.output.clone().map(|prefix| Output {
        bucket: prefix.bucket,
        prefix: prefix.key,
        format: match args.output_format {
            Some(OutputArg::Csv) => OutputFormat::Csv,
            Some(OutputArg::Jsonl) => OutputFormat::JsonLines,
            Some(OutputArg::Parquet) => OutputFormat::Parquet,
            None => format.output_format(),
        },
        scope: String::new(),
        first_part: None,
    });
    let chunk_size = parse_size(&args.chunk_size)?;
    if chunk_size == 0 {
        anyhow::bail!("--chunk-size must be at least 1 byte");
    }
    let max_record_size = parse_size(&args.max_record_size)?;
    if max_record_size < 1024 {
        anyhow::bail!("--max-record-size must be at least 1Ki");
    }
    // Refuse what cannot parse before any request (columns are checked once the header is read).
    compile(&args.sql, &Columns::Named).map_err(|e| anyhow::anyhow!("{e} (InvalidSql)"))?;
    let request = PlanRequest {
        bucket: args.object.bucket.clone(),
        key: args.object.key.clone(),
        format,
        expected_headers: None,
        chunk_size,
        max_record_size,
    };
    Ok((request, output))
}

/// Longest --keys-from file read.
const MAX_KEYS_FILE: u64 = 4 << 20;

/// Which objects the arguments name.
fn source(args: &ScanArgs) -> anyhow::Result<ObjectSource> {
    let key = args.object.key.as_str();
    if let Some(manifest) = &args.manifest {
        anyhow::ensure!(
            key.is_empty(),
            "with --manifest, name the bucket only: s3://{}",
            args.object.bucket
        );
        return Ok(ObjectSource::Manifest(ManifestRef {
            bucket: manifest.bucket.clone(),
            key: manifest.key.clone(),
            etag: args.manifest_etag.clone(),
        }));
    }
    match &args.keys_from {
        Some(path) if key.is_empty() => {
            use std::io::Read;
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|file| file.take(MAX_KEYS_FILE).read_to_string(&mut text))
                .map_err(|e| anyhow::anyhow!("--keys-from {}: {e}", path.display()))?;
            let keys = text
                .lines()
                .map(|line| line.trim_end_matches('\r'))
                .filter(|line| !line.is_empty())
                .map(str::to_string)
                .collect();
            ObjectSource::keys(keys).map_err(|e| anyhow::anyhow!("--keys-from: {e}"))
        }
        Some(_) => anyhow::bail!(
            "with --keys-from, name the bucket only: s3://{}",
            args.object.bucket
        ),
        None if is_glob(key) || key.is_empty() || key.ends_with('/') => Glob::new(key)
            .map(ObjectSource::Glob)
            .map_err(|e| anyhow::anyhow!("{e} (InvalidScan)")),
        None => Ok(ObjectSource::Key(key.to_string())),
    }
}

/// An engine's error as the CLI says it: the message and its reason.
fn failed(e: s3flow::scan::ScanError) -> anyhow::Error {
    anyhow::anyhow!("{e} ({})", e.reason())
}

/// Runs the scan; returns the JSON summary and whether to print it as JSON.
pub(crate) async fn run(args: ScanArgs) -> anyhow::Result<(serde_json::Value, bool)> {
    // Everything but the format is checked before the first request.
    request(&args, DetectedFormat::Csv)?;
    let source = source(&args)?;
    s3flow::s3::set_read_floor(s3flow::floor::ThroughputFloor {
        min_bytes_per_second: args.min_bytes_per_second,
        window: Duration::from_secs(args.stall_timeout.max(1)),
    });
    let s3 = super::s3_client(args.endpoint.clone(), args.region.clone()).await?;
    match source {
        ObjectSource::Key(_) => run_one(args, s3).await,
        many => run_many(args, s3, many).await,
    }
}

/// The format `--format` names, or `auto`'s guess for the object at `key`.
async fn format_of(
    args: &ScanArgs,
    s3: &aws_sdk_s3::Client,
    key: Option<&str>,
) -> anyhow::Result<DetectedFormat> {
    Ok(match (args.format, key) {
        (FormatArg::Auto, Some(key)) => detect_format(s3, &args.object.bucket, key)
            .await
            .map_err(failed)?,
        (FormatArg::Auto | FormatArg::Csv, _) => DetectedFormat::Csv,
        (FormatArg::Jsonl, _) => DetectedFormat::JsonLines,
        (FormatArg::Parquet, _) => DetectedFormat::Parquet,
    })
}

/// A scan of many objects: listed in key order, planned as they come (`auto` takes the first
/// object's format for all), merged in key order.
async fn run_many(
    args: ScanArgs,
    s3: aws_sdk_s3::Client,
    source: ObjectSource,
) -> anyhow::Result<(serde_json::Value, bool)> {
    let counters = Counters {
        changes: ObjectChanges::new(
            match args.on_object_change {
                ChangeArg::Fail => OnObjectChange::Fail,
                ChangeArg::Skip => OnObjectChange::Skip,
            },
            args.max_failed_objects,
        ),
        ..Counters::default()
    };
    let hive = match args.hive_partitioning {
        HiveArg::Auto => HivePartitioning::Auto,
        HiveArg::Enabled => HivePartitioning::Enabled,
        HiveArg::Disabled => HivePartitioning::Disabled,
    };
    // What the WHERE clause says of partitions, before any object's columns are known.
    let prune = compile(&args.sql, &Columns::Named).ok();
    let selection = Selection {
        bucket: args.object.bucket.clone(),
        source,
        max_objects: args.max_objects,
        allow_empty: args.allow_empty,
        changes: counters.changes.clone(),
        folders: prune
            .clone()
            .filter(|_| hive != HivePartitioning::Disabled)
            .map(|query| FolderPruning {
                query,
                pruned: counters.pruned_folders.clone(),
            }),
    };
    let location = selection.describe();
    if let Some(output) = &args.output
        && selection.lists_under(&output.bucket, &output.key)
    {
        anyhow::bail!(
            "--output s3://{}/{} lies where {location} lists objects: the rows written would be \
             read back (InvalidScan)",
            output.bucket,
            output.key
        );
    }
    let started = Instant::now();
    let mut versions = objects::list(&s3, &selection).boxed().peekable();
    let first_key = match std::pin::Pin::new(&mut versions).peek().await {
        Some(Ok(first)) => Some(first.key.clone()),
        // The listing's failure comes with the planning.
        _ => None,
    };
    let (request, output) = request(&args, format_of(&args, &s3, first_key.as_deref()).await?)?;
    let planning = Planning {
        request: request.clone(),
        hive,
        prune,
        pruned: counters.pruned.clone(),
        union_by_name: args.union_by_name,
        changes: counters.changes.clone(),
    };
    let mut layouts = objects::plan_each(&s3, versions, &planning).boxed();
    let first = layouts.next().await.transpose().map_err(failed)?;
    let query = match &first {
        Some(first) => first.compile(&args.sql),
        // No object to name the columns: any name is one (of no record).
        None => compile(&args.sql, &Columns::Named).map_err(Into::into),
    }
    .map_err(failed)?;
    let parallelism = (args.parallelism as usize, Stop::on(shutdown::on_signal()?));
    if let (Some(first), Some(output)) = (&first, &output) {
        let names_columns = query.output_names().is_some();
        first
            .format
            .check_output(output.format, names_columns)
            .map_err(failed)?;
    }
    let prints_rows = !query.is_aggregate() && output.is_none() && !args.json;
    let summary = match first {
        Some(first) if prints_rows => {
            let layouts = futures::stream::iter([Ok(first.clone())]).chain(layouts);
            let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
            let engine = print_rows(
                &s3,
                (&first, layouts),
                (&query, &args.sql),
                parallelism,
                &counters,
                &mut stdout,
            );
            let printed = with_progress_bar(None, &counters, engine).await;
            use std::io::Write;
            stdout.flush()?;
            printed
        }
        first => {
            let layouts = futures::stream::iter(first.map(Ok)).chain(layouts);
            let output = output.as_ref().map(|output| (output, location.as_str()));
            let engine = scan_objects(
                &s3,
                layouts,
                (&query, &args.sql),
                output,
                parallelism,
                &counters,
            );
            with_progress_bar(None, &counters, engine).await
        }
    }
    .map_err(failed)?;
    let seconds = started.elapsed().as_secs_f64();
    let mut value = serde_json::to_value(&summary)?;
    value["source"] = location.clone().into();
    value["seconds"] = ((seconds * 1000.0).round() / 1000.0).into();
    if !args.json {
        print_summary(&location, &summary, seconds, !prints_rows);
    }
    Ok((value, args.json))
}

/// A scan of one object.
async fn run_one(
    args: ScanArgs,
    s3: aws_sdk_s3::Client,
) -> anyhow::Result<(serde_json::Value, bool)> {
    let detected = format_of(&args, &s3, Some(&args.object.key)).await?;
    let (request, output) = request(&args, detected)?;
    let started = Instant::now();
    let layout = plan(&s3, &request).await.map_err(failed)?;
    let query = layout.compile(&args.sql).map_err(failed)?;
    let counters = Counters::default();
    let parallelism = (args.parallelism as usize, Stop::on(shutdown::on_signal()?));
    // Rows of a row query go to stdout unless they are kept in S3 or a summary is asked for.
    let prints_rows = !query.is_aggregate() && output.is_none() && !args.json;
    let summary = if prints_rows {
        // Buffered: rows come in buffers of many rows, not line by line.
        let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
        let layouts = futures::stream::iter([Ok(layout.clone())]);
        let engine = print_rows(
            &s3,
            (&layout, layouts),
            (&query, &args.sql),
            parallelism,
            &counters,
            &mut stdout,
        );
        let printed = with_progress_bar(Some(&layout), &counters, engine).await;
        use std::io::Write;
        stdout.flush()?;
        printed
    } else {
        let engine = scan(
            &s3,
            &layout,
            (&query, &args.sql),
            output,
            parallelism,
            &counters,
        );
        with_progress_bar(Some(&layout), &counters, engine).await
    }
    .map_err(failed)?;
    let seconds = started.elapsed().as_secs_f64();
    let mut value = serde_json::to_value(&summary)?;
    value["object"] = layout.object.url().into();
    value["size"] = layout.object.size.into();
    value["seconds"] = ((seconds * 1000.0).round() / 1000.0).into();
    if !args.json {
        print_summary(&layout.object.url(), &summary, seconds, !prints_rows);
    }
    Ok((value, args.json))
}

/// Runs `engine` under a progress bar of bytes, chunks and objects (of one object: toward its
/// size and chunk count).
async fn with_progress_bar<T>(
    layout: Option<&Layout>,
    counters: &Counters,
    engine: impl Future<Output = T>,
) -> T {
    let bar = match layout {
        Some(layout) => ProgressBar::new(layout.object.size.saturating_sub(layout.data_start)),
        None => ProgressBar::no_length(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} {msg}",
        )
        .expect("valid template"),
    );
    let total_chunks = layout.map(Layout::chunk_count);
    tokio::pin!(engine);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let done = loop {
        tokio::select! {
            done = &mut engine => break done,
            _ = tick.tick() => {
                bar.set_position(counters.bytes.load(Ordering::Relaxed));
                let chunks = counters.chunks.load(Ordering::Relaxed);
                bar.set_message(match total_chunks {
                    Some(total) => format!("{chunks}/{total} chunks"),
                    None => format!(
                        "{chunks} chunks of {} objects",
                        counters.objects.load(Ordering::Relaxed)
                    ),
                });
            }
        }
    };
    bar.finish_and_clear();
    done
}

/// The summary on stderr; the result on stdout as a table of name and value (`result_out`:
/// stdout holds no rows).
fn print_summary(location: &str, summary: &ScanSummary, seconds: f64, result_out: bool) {
    let reruns = match summary.reruns {
        0 => String::new(),
        n => format!(" ({n} re-run)"),
    };
    let counts = &summary.objects;
    let folders = match counts.pruned_folders {
        0 => String::new(),
        folders => format!(", {folders} folders"),
    };
    let objects = match (counts.pruned + counts.pruned_folders, counts.skipped) {
        _ if counts.matched == 1 => String::new(),
        (0, 0) => format!("{} objects, ", counts.scanned),
        _ => format!(
            "{} objects ({} pruned by their partitions{folders}, {} skipped as changed), ",
            counts.scanned, counts.pruned, counts.skipped
        ),
    };
    eprintln!(
        "{location}: {objects}{} records in {} chunks{reruns}, {} bytes in {seconds:.1} s",
        summary.records, summary.chunks, summary.bytes,
    );
    for failure in &summary.skipped {
        eprintln!(
            "skipped {}: {} ({})",
            failure.key, failure.message, failure.reason
        );
    }
    for (column, objects) in &summary.missing_columns {
        eprintln!("column {column} is missing in {objects} objects (NULL in their records)");
    }
    if let Some(groups) = &summary.row_groups {
        eprintln!(
            "row groups: {} of {} skipped by their statistics ({} bytes); {} bytes fetched",
            groups.skipped, groups.total, groups.skipped_bytes, groups.fetched_bytes
        );
    }
    if !result_out {
        eprintln!("{} rows", summary.rows);
        return;
    }
    for (name, value) in &summary.result {
        println!("{name}\t{value}");
    }
    if let Some(manifest) = &summary.manifest {
        println!("manifest\t{manifest}");
    }
}
