//! What the scan controller reads before it decides: the scan as it is now, the Jobs it owns,
//! its source and plan, and the reports and messages of finished Jobs.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::decide::{Bookkeeping, ChunkJob, Outcome, POD_GRACE, Report, Running};
use super::jobs::{Role, disallowed_image, job_prefix};
use crate::api::Phase;
use crate::api::S3Connection;
use crate::api::ingest::S3Ingest;
use crate::api::scan::{S3ParallelScan, S3ParallelScanStatus};
use crate::controller::{Context, Error, s3_access};
use crate::scan::chunk::scope_of;
use crate::scan::plan::plan_within;
use crate::scan::{
    ChunkObject, ChunkReport, InputFormat, Layout, Output, PlanRequest, ScanError, State,
};
use crate::size::parse_size;
use crate::worker::WorkerIdentity;
use crate::worker::{FailureMessage, LABEL_CHUNK, LABEL_ROLE, LABEL_SCAN, LABEL_START_STATE};

/// The query of the counting pass before a container processor.
pub(super) const COUNT_QUERY: &str = "SELECT COUNT(*) FROM S3Object";
/// Largest chunk report read back from S3 (a few KiB when genuine; a chunk of 10,000 objects
/// lists what it read of each in about 140 KiB).
pub(super) const REPORT_LIMIT: usize = 256 << 10;
/// Most bytes of reports one reconcile reads: the reports of chunks past them wait for the next.
const REPORTS_PER_RECONCILE: usize = 4 << 20;

/// The scan as it is now and the Jobs it owns.
pub(super) struct Seen {
    pub scan: S3ParallelScan,
    /// Jobs owned by this scan (by owner reference uid), not being deleted.
    pub jobs: Vec<Job>,
    /// Owned Jobs being deleted.
    pub deleting: usize,
}

/// The scan as it is now (the cache may trail this controller's own last status write), or
/// `None` when it is gone or replaced by another of the same name.
pub(super) async fn seen(ctx: &Context, obj: &S3ParallelScan) -> Result<Option<Seen>, Error> {
    let api: Api<S3ParallelScan> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let Some(scan) = api
        .get_opt(&obj.name_any())
        .await?
        .filter(|o| o.uid() == obj.uid())
    else {
        return Ok(None);
    };
    let (deleting, jobs): (Vec<Job>, Vec<Job>) = owned_jobs(ctx, &scan)
        .await?
        .into_iter()
        .partition(|job| job.metadata.deletion_timestamp.is_some());
    Ok(Some(Seen {
        scan,
        jobs,
        deleting: deleting.len(),
    }))
}

/// The Jobs that carry the scan's label and name it as their controlling owner: a label alone
/// (which anyone who may create Jobs can set) does not make a Job the scan's.
pub(super) async fn owned_jobs(
    ctx: &Context,
    scan: &S3ParallelScan,
) -> Result<Vec<Job>, kube::Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &scan.namespace().unwrap_or_default());
    let uid = scan.uid().unwrap_or_default();
    let selector = format!("{LABEL_SCAN}={uid}");
    let mut jobs = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    jobs.retain(|job| {
        job.owner_references()
            .iter()
            .any(|owner| owner.uid == uid && owner.controller == Some(true))
    });
    Ok(jobs)
}

/// The object a scan reads and how to reach it.
#[derive(Clone, Debug)]
pub(super) struct Source {
    pub bucket: String,
    /// The object's key (of many objects: the glob or the count of keys, for messages).
    pub key: String,
    pub connection: S3Connection,
    /// The objects of a scan of many.
    pub many: Option<crate::scan::objects::Selection>,
}

/// Where a running scan's chunks, reports and manifest go.
pub(super) struct Io {
    pub s3: aws_sdk_s3::Client,
    pub source: Source,
    /// Bucket and prefix of chunk reports, upload records and the manifest.
    pub work: (String, String),
    pub output: Option<Output>,
    /// The scope of the scan's keys (see [`Output::scope`]).
    pub scope: String,
    /// The ServiceAccount the scan's pods act as, when its connection names one.
    pub identity: Option<WorkerIdentity>,
}

impl Io {
    /// Key of chunk `index`'s report.
    pub(super) fn report_key(&self, index: u32) -> String {
        ChunkObject::Report.key(&self.work.1, &self.scope, index)
    }

    /// Key of chunk `index`'s container processor's output.
    pub(super) fn output_key(&self, index: u32) -> String {
        ChunkObject::ProcessorOutput.key(&self.work.1, &self.scope, index)
    }

    /// Key of the manifest.
    pub(super) fn manifest_key(&self) -> String {
        crate::scan::chunk::manifest_key(&self.work.1, &self.scope)
    }
}

/// What the scan can do now.
pub(super) enum Observed {
    /// Its source cannot be read yet (an S3Ingest still running), with why.
    Waiting(String),
    /// It cannot run: a reason and a message (inputs, planning, SQL).
    Refused(&'static str, String),
    /// A slice of its objects was listed and planned: this status records it.
    Listed(Box<S3ParallelScanStatus>),
    /// It runs.
    Running(Box<Ready>),
}

/// A scan that runs: what decide needs, planned in this reconcile when `planned_now`.
pub(super) struct Ready {
    pub state: Running,
    pub checkpoint: Bookkeeping,
    pub planned_now: bool,
    pub io: Io,
}

impl From<(&'static str, String)> for Observed {
    fn from((reason, message): (&'static str, String)) -> Self {
        Observed::Refused(reason, message)
    }
}

/// Reads the source, plans (once) and compiles the query, and reads the finished Jobs' reports
/// and messages. Transient S3 errors are errors (the reconcile is retried); verdicts on the input
/// are [`Observed::Refused`].
pub(super) async fn running(ctx: &Context, seen: &Seen) -> Result<Observed, Error> {
    let obj = &seen.scan;
    let settings = &ctx.settings;
    if let Some(image) = disallowed_image(obj, &settings.allowed_images, &settings.worker_image) {
        return Ok(Observed::Refused(
            "ImageNotAllowed",
            format!("image {image:?} is not one the operator's --allowed-image patterns allow"),
        ));
    }
    let source = match source(ctx, obj).await {
        Ok(source) => source,
        Err(blocked) => return Ok(blocked),
    };
    let (s3, identity) = match s3_access(ctx, obj, &source.connection).await {
        Ok(access) => access,
        Err(e) if e.is_transient() => return Err(Error::Input(e)),
        Err(e) => return Ok(Observed::Refused(e.reason(), e.to_string())),
    };
    let status = obj.status.clone().unwrap_or_default();
    let scope = scope_of(&obj.uid().unwrap_or_default());
    if let Some(selection) = &source.many {
        if obj.spec.processor.container.is_some() {
            return Ok(Observed::Refused(
                "InvalidScan",
                "a container processor reads one object: scan many objects with sql".into(),
            ));
        }
        if let Some(output) = &obj.spec.processor.output
            && selection.lists_under(&output.bucket, &output.prefix)
        {
            return Ok(Observed::Refused(
                "InvalidScan",
                format!(
                    "the output s3://{}/{} lies where the glob lists: the scan would read its \
                     own rows",
                    output.bucket, output.prefix
                ),
            ));
        }
        if !status.listing.as_ref().is_some_and(|l| l.complete) {
            let (bucket, prefix) = work_location(obj, &source.bucket);
            let plan_prefix = super::listing::plan_prefix(&prefix, &scope);
            return super::listing::list_slice(
                obj,
                &s3,
                selection,
                (&bucket, &plan_prefix),
                settings.listing_slice,
            )
            .await;
        }
    }
    let recorded = Bookkeeping::of(&status).and_then(|c| match &source.many {
        None => recorded_layout(obj, &source, &status, &c),
        Some(_) if status.total_chunks.is_some() => listed_layout(obj, &source, &status, c.columns),
        Some(_) => None,
    });
    if let (Some(layout), Some(checkpoint)) = (&recorded, Bookkeeping::of(&status))
        && let Err(why) = checkpoint.check(layout.chunk_count())
    {
        return Ok(Observed::Refused(
            "InvalidStatus",
            format!("status.checkpoint is not the operator's: {why} (status must not be edited)"),
        ));
    }
    let planned_now = recorded.is_none();
    let layout = match recorded {
        Some(layout) => layout,
        None if source.many.is_some() => {
            let columns = status
                .listing
                .as_ref()
                .map(|l| l.columns.clone())
                .unwrap_or_default();
            match listed_layout(obj, &source, &status, columns) {
                Some(layout) => layout,
                None => {
                    return Ok(Observed::Refused(
                        "InvalidStatus",
                        "status.listing is not the operator's (status must not be edited)".into(),
                    ));
                }
            }
        }
        None => match plan_scan(obj, &s3, &source, settings.planning_deadline).await {
            Ok(layout) => layout,
            Err(PlanFailure::Transient(e)) => return Err(Error::Scan(e)),
            Err(PlanFailure::Refused(reason, message)) => {
                return Ok(Observed::Refused(reason, message));
            }
        },
    };
    let containers = obj.spec.processor.container.is_some();
    let (sql, query) = match query_of(obj, &layout) {
        Ok(compiled) => compiled,
        Err(refused) => return Ok(refused),
    };
    let output = output_of(obj);
    if let Some(output) = &output
        && let Err(e) = layout
            .format
            .check_output(output.format, query.output_names().is_some())
    {
        return Ok(Observed::Refused(e.reason(), e.to_string()));
    }
    let checkpoint = match Bookkeeping::of(&status) {
        Some(checkpoint) if !planned_now => checkpoint,
        _ => Bookkeeping::new(query.empty_partials(), &layout, output.clone()),
    };
    let work = crate::scan::Work::Query {
        sql,
        output: if containers { None } else { output.clone() },
    };
    let io = Io {
        work: work_location(obj, &layout.object.bucket),
        s3,
        source,
        output,
        scope,
        identity,
    };
    let namespace = obj.namespace().unwrap_or_default();
    let jobs = chunk_jobs(ctx, &seen.jobs).await?;
    let reports = reports(ctx, &io, &namespace, &jobs, checkpoint.verifier.next).await?;
    let outputs = processor_outputs(ctx, &namespace, &jobs).await?;
    let state = Running {
        generation: obj.metadata.generation,
        status,
        layout,
        query,
        work,
        run: obj.uid().unwrap_or_default(),
        containers,
        has_on_complete: obj.spec.on_complete.is_some(),
        parallelism: obj.spec.chunking.parallelism.max(1) as u32,
        jobs,
        reports,
        outputs,
        now: Timestamp::now(),
    };
    Ok(Observed::Running(Box::new(Ready {
        state,
        checkpoint,
        planned_now,
        io,
    })))
}

/// The scan's SQL (COUNT(*) when it has none) and its compiled query.
fn query_of(
    obj: &S3ParallelScan,
    layout: &Layout,
) -> Result<(String, crate::scan::sql::Query), Observed> {
    let sql = obj
        .spec
        .processor
        .sql
        .clone()
        .unwrap_or_else(|| COUNT_QUERY.to_string());
    let query = layout
        .compile(&sql)
        .map_err(|e| Observed::Refused(e.reason(), e.to_string()))?;
    Ok((sql, query))
}

/// What the finished container processors said, by chunk.
async fn processor_outputs(
    ctx: &Context,
    namespace: &str,
    jobs: &[ChunkJob],
) -> Result<BTreeMap<u32, String>, Error> {
    let mut outputs = BTreeMap::new();
    for job in jobs {
        if job.role == Role::Process && job.outcome == Outcome::Succeeded {
            let container = Role::Process.reporting_container();
            let message =
                termination_message(ctx, namespace, (&job.name, &job.uid), container).await?;
            outputs.insert(job.index, message.unwrap_or_default());
        }
    }
    Ok(outputs)
}

/// The scan's source: its own bucket and key, or its S3Ingest's object once that succeeded.
async fn source(ctx: &Context, obj: &S3ParallelScan) -> Result<Source, Observed> {
    let spec = &obj.spec.source;
    let Some(reference) = &spec.ingest_ref else {
        let many = match super::listing::selection_of(obj).transpose() {
            Ok(many) => many,
            Err(e) => return Err(Observed::Refused(e.reason(), e.to_string())),
        };
        return Ok(Source {
            bucket: spec.bucket.clone().unwrap_or_default(),
            key: match &many {
                Some(selection) => selection.describe(),
                None => spec.key.clone().unwrap_or_default(),
            },
            connection: spec.connection.clone(),
            many,
        });
    };
    let api: Api<S3Ingest> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let ingest = match api.get_opt(&reference.name).await {
        Ok(Some(ingest)) => ingest,
        Ok(None) => {
            return Err(Observed::Waiting(format!(
                "waiting for S3Ingest {:?}, which does not exist yet",
                reference.name
            )));
        }
        Err(e) => {
            return Err(Observed::Waiting(format!(
                "reading S3Ingest {:?}: {e}",
                reference.name
            )));
        }
    };
    match ingest.status.as_ref().map(|s| s.phase) {
        Some(Phase::Succeeded) => Ok(Source {
            bucket: ingest.spec.destination.bucket.clone(),
            key: ingest.spec.destination.key.clone(),
            connection: ingest.spec.destination.connection.clone(),
            many: None,
        }),
        Some(Phase::Failed) => Err(Observed::Refused(
            "IngestFailed",
            format!("S3Ingest {:?} failed; nothing to scan", reference.name),
        )),
        _ => Err(Observed::Waiting(format!(
            "waiting for S3Ingest {:?} to succeed",
            reference.name
        ))),
    }
}

pub(super) fn format_of(obj: &S3ParallelScan) -> InputFormat {
    match (&obj.spec.format.csv, &obj.spec.format.parquet) {
        (Some(csv), _) => InputFormat::Csv {
            delimiter: csv.delimiter.bytes().next().unwrap_or(b','),
            quote: csv.quote.bytes().next().unwrap_or(b'"'),
            header: csv.header,
        },
        (None, Some(_)) => InputFormat::Parquet,
        (None, None) => InputFormat::JsonLines,
    }
}

/// The planned layout as status and its checkpoint recorded it, when it is one planning could
/// have made (status can be patched: anything else plans again).
fn recorded_layout(
    obj: &S3ParallelScan,
    source: &Source,
    status: &S3ParallelScanStatus,
    checkpoint: &Bookkeeping,
) -> Option<Layout> {
    let size = u64::try_from(status.object_size?).ok()?;
    let data_start = u64::try_from(status.data_start?).ok()?;
    let layout = Layout {
        object: crate::scan::ObjectVersion {
            bucket: source.bucket.clone(),
            key: source.key.clone(),
            size,
            etag: status.etag.clone()?,
            modified: status.object_modified.clone(),
        },
        format: format_of(obj),
        columns: checkpoint.columns.clone(),
        data_start,
        chunk_size: parse_size(&obj.spec.chunking.chunk_size).ok()?,
        compression: match status.compression.as_deref() {
            None => crate::scan::Compression::None,
            Some(name) => crate::scan::Compression::named(name)?,
        },
        max_record_size: parse_size(&obj.spec.chunking.max_record_size).ok()?,
        parquet: checkpoint.parquet.clone(),
        joined: Default::default(),
        plan: None,
        prefetched: Default::default(),
    };
    let planned_count = u64::from(layout.chunk_count());
    let plausible = data_start <= size
        && layout.chunk_size > 0
        && planned_count <= crate::scan::plan::MAX_CHUNKS
        && status.total_chunks.and_then(|t| u64::try_from(t).ok()) == Some(planned_count);
    plausible.then_some(layout)
}

/// The layout of a scan of many objects whose listing is complete: the plan it wrote, the first
/// object's `columns`; `None` when status cannot be the operator's.
fn listed_layout(
    obj: &S3ParallelScan,
    source: &Source,
    status: &S3ParallelScanStatus,
    columns: Vec<String>,
) -> Option<Layout> {
    let listing = status.listing.as_ref().filter(|l| l.complete)?;
    let (work_bucket, work_prefix) = work_location(obj, &source.bucket);
    let scope = scope_of(&obj.uid().unwrap_or_default());
    let plan_prefix = super::listing::plan_prefix(&work_prefix, &scope);
    let plan = super::listing::plan_of(
        obj,
        listing,
        status.objects.as_ref(),
        (&source.bucket, &work_bucket, &plan_prefix),
    )?;
    let plausible = u64::from(plan.chunks) <= crate::scan::plan::MAX_CHUNKS
        && plan.segments.len() <= super::listing::MAX_SEGMENTS
        && plan.segments.windows(2).all(|w| w[0].first < w[1].first)
        && plan.segments.iter().all(|s| s.first < plan.chunks);
    let layout = Layout {
        object: crate::scan::ObjectVersion {
            bucket: source.bucket.clone(),
            key: source.key.clone(),
            size: u64::try_from(listing.bytes).ok()?,
            etag: String::new(),
            modified: None,
        },
        format: format_of(obj),
        columns,
        data_start: 0,
        chunk_size: parse_size(&obj.spec.chunking.chunk_size).ok()?,
        compression: crate::scan::Compression::None,
        max_record_size: parse_size(&obj.spec.chunking.max_record_size).ok()?,
        parquet: None,
        // The query is compiled against the first object's partitions: every object has
        // the same partition keys.
        joined: crate::scan::plan::JoinedColumns {
            partitions: listing
                .first_key
                .as_deref()
                .map(|key| super::listing::partitions_of(obj, key))
                .unwrap_or_default(),
            // A scan of no object has no columns: a column it names is NULL.
            union_by_name: super::listing::union_by_name(obj) || plan.chunks == 0,
        },
        plan: Some(plan),
        prefetched: Default::default(),
    };
    plausible.then_some(layout)
}

/// How the scan plans `bucket/key`: its format, expected header, chunk and record sizes.
pub(super) fn plan_request(
    obj: &S3ParallelScan,
    bucket: &str,
    key: &str,
) -> Result<PlanRequest, ScanError> {
    let chunking = &obj.spec.chunking;
    let size = |field: &str, text: &str| {
        parse_size(text).map_err(|e| ScanError::InvalidScan(format!("{field}: {e}")))
    };
    Ok(PlanRequest {
        bucket: bucket.to_string(),
        key: key.to_string(),
        format: format_of(obj),
        expected_headers: obj
            .spec
            .format
            .csv
            .as_ref()
            .and_then(|c| c.expected_headers.clone()),
        chunk_size: size("chunkSize", &chunking.chunk_size)?,
        max_record_size: size("maxRecordSize", &chunking.max_record_size)?,
    })
}

enum PlanFailure {
    /// S3 hiccups: try again.
    Transient(ScanError),
    /// A verdict on the input.
    Refused(&'static str, String),
}

async fn plan_scan(
    obj: &S3ParallelScan,
    s3: &aws_sdk_s3::Client,
    source: &Source,
    deadline: std::time::Duration,
) -> Result<Layout, PlanFailure> {
    let request = plan_request(obj, &source.bucket, &source.key)
        .map_err(|e| PlanFailure::Refused(e.reason(), e.to_string()))?;
    plan_within(s3, &request, deadline)
        .await
        .map_err(|e| match e.is_transient() {
            true => PlanFailure::Transient(e),
            false => PlanFailure::Refused(e.reason(), e.to_string()),
        })
}

/// Row output and chunk reports go under the output prefix, or under a prefix of the source
/// bucket for scans without output.
pub(super) fn work_location(obj: &S3ParallelScan, source_bucket: &str) -> (String, String) {
    match &obj.spec.processor.output {
        Some(output) => (output.bucket.clone(), output.prefix.clone()),
        None => (
            source_bucket.to_string(),
            format!(
                ".s3flow/scans/{}/{}/",
                obj.namespace().unwrap_or_default(),
                job_prefix(obj)
            ),
        ),
    }
}

/// Where the scan's row output goes, if it writes rows.
pub(super) fn output_of(obj: &S3ParallelScan) -> Option<Output> {
    obj.spec.processor.output.as_ref().map(|output| Output {
        bucket: output.bucket.clone(),
        prefix: output.prefix.clone(),
        format: output
            .format
            .unwrap_or_else(|| format_of(obj).output_format()),
        scope: scope_of(&obj.uid().unwrap_or_default()),
        first_part: None,
    })
}

fn label<'a>(job: &'a Job, key: &str) -> Option<&'a str> {
    job.labels().get(key).map(String::as_str)
}

/// Complete, failed, or neither.
fn finished(job: &Job) -> Option<bool> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let holds = |type_: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    match (holds("Complete"), holds("Failed")) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

/// The scan's Jobs as decide sees them: role, chunk and state from their labels, and how they
/// ended (a failure's reason and message from its container, refused pods from the Job's
/// events). Jobs with labels that do not parse are left out.
async fn chunk_jobs(ctx: &Context, jobs: &[Job]) -> Result<Vec<ChunkJob>, Error> {
    let mut seen = Vec::with_capacity(jobs.len());
    for job in jobs {
        let (Some(role), Some(index)) = (
            label(job, LABEL_ROLE).and_then(Role::from_label),
            label(job, LABEL_CHUNK).and_then(|i| i.parse().ok()),
        ) else {
            continue;
        };
        let state = label(job, LABEL_START_STATE)
            .and_then(|code| code.chars().next())
            .and_then(State::from_code);
        let name = job.name_any();
        let uid = job.uid().unwrap_or_default();
        let outcome = match finished(job) {
            Some(true) => Outcome::Succeeded,
            Some(false) => {
                let namespace = job.namespace().unwrap_or_default();
                let container = role.reporting_container();
                let message = termination_message(ctx, &namespace, (&name, &uid), container)
                    .await?
                    .unwrap_or_default();
                match serde_json::from_str::<FailureMessage>(&message) {
                    Ok(failure) => Outcome::Failed {
                        reason: Some(failure.reason),
                        message: failure.error,
                    },
                    Err(_) => Outcome::Failed {
                        reason: None,
                        message,
                    },
                }
            }
            None => match refused_pods(ctx, job).await? {
                Some(message) => Outcome::Refused(message),
                None => Outcome::Running,
            },
        };
        seen.push(ChunkJob {
            name,
            uid,
            role,
            index,
            state,
            outcome,
        });
    }
    Ok(seen)
}

/// Why the Job controller cannot create the Job's pods, when it has had none for a while: the API
/// server's refusal, from the Job's FailedCreate Events.
async fn refused_pods(ctx: &Context, job: &Job) -> Result<Option<String>, Error> {
    let status = job.status.clone().unwrap_or_default();
    let pods =
        status.active.unwrap_or(0) + status.succeeded.unwrap_or(0) + status.failed.unwrap_or(0);
    let created = job.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let young =
        created.is_none_or(|t| Timestamp::now().duration_since(t).unsigned_abs() < POD_GRACE);
    if pods > 0 || young {
        return Ok(None);
    }
    let events: Api<Event> =
        Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let selector = format!(
        "involvedObject.kind=Job,involvedObject.name={},involvedObject.uid={},reason=FailedCreate",
        job.name_any(),
        job.uid().unwrap_or_default()
    );
    let list = events
        .list(&ListParams::default().fields(&selector))
        .await?;
    Ok(list
        .items
        .into_iter()
        .max_by_key(|e| e.last_timestamp.clone().map(|t| t.0))
        .and_then(|e| e.message))
}

/// The termination message of `container` in the last pod of the Job (name, uid) that ran it to
/// the end. A pod counts only when the Job controls it (its `controller-uid` label and its
/// controlling owner are the Job's): a label alone, which anyone who may create pods sets, does
/// not make a pod the Job's.
async fn termination_message(
    ctx: &Context,
    namespace: &str,
    (job, uid): (&str, &str),
    container: &str,
) -> Result<Option<String>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector =
        format!("batch.kubernetes.io/job-name={job},batch.kubernetes.io/controller-uid={uid}");
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    let mut messages: Vec<(Option<Timestamp>, String)> = list
        .items
        .iter()
        .filter(|pod| {
            pod.owner_references()
                .iter()
                .any(|owner| owner.uid == uid && owner.controller == Some(true))
        })
        .filter_map(|pod| {
            let status = pod.status.as_ref()?;
            let statuses = status
                .container_statuses
                .iter()
                .flatten()
                .chain(status.init_container_statuses.iter().flatten());
            let terminated = statuses
                .filter(|s| s.name == container)
                .find_map(|s| s.state.as_ref()?.terminated.clone())?;
            Some((
                terminated.finished_at.map(|t| t.0),
                terminated.message.unwrap_or_default(),
            ))
        })
        .collect();
    messages.sort_by_key(|(finished, _)| *finished);
    Ok(messages.pop().map(|(_, message)| message))
}

/// The reports of the finished scan Jobs that can be accepted next (chunk `next` on, up to the
/// first chunk without a finished scan Job), and of a finished Cut Job: at most
/// [`REPORTS_PER_RECONCILE`] bytes of them, the rest in the next reconcile.
async fn reports(
    ctx: &Context,
    io: &Io,
    namespace: &str,
    jobs: &[ChunkJob],
    next: u32,
) -> Result<BTreeMap<String, Report>, Error> {
    let mut finished: BTreeMap<u32, Vec<&ChunkJob>> = BTreeMap::new();
    for job in jobs {
        if job.role == Role::Scan && job.outcome == Outcome::Succeeded && job.index >= next {
            finished.entry(job.index).or_default().push(job);
        }
    }
    let mut to_read: Vec<&ChunkJob> = jobs
        .iter()
        .filter(|j| j.role == Role::Cut && j.outcome == Outcome::Succeeded)
        .collect();
    for (expected, (index, chunk_jobs)) in (next..).zip(finished) {
        if index != expected {
            break;
        }
        to_read.extend(chunk_jobs);
    }
    let mut reports = BTreeMap::new();
    let mut read = 0;
    for job in to_read {
        if read >= REPORTS_PER_RECONCILE {
            break;
        }
        let (report, bytes) = read_report(ctx, io, namespace, job).await?;
        read += bytes;
        reports.insert(job.name.clone(), report);
    }
    Ok(reports)
}

/// A finished chunk Job's report, and its size: the Job's termination message, else the copy
/// the worker stored at the chunk's report key (never where a message says: a message is
/// untrusted). Transient read errors are errors.
async fn read_report(
    ctx: &Context,
    io: &Io,
    namespace: &str,
    job: &ChunkJob,
) -> Result<(Report, usize), Error> {
    let container = job.role.reporting_container();
    let message = termination_message(ctx, namespace, (&job.name, &job.uid), container).await?;
    if let Some(message) = message
        && let Ok(report) = serde_json::from_str::<ChunkReport>(&message)
    {
        return Ok((Report::Read(Box::new(report)), message.len()));
    }
    let (bucket, _) = &io.work;
    match get_report(&io.s3, bucket, &io.report_key(job.index)).await {
        Ok((report, bytes)) => Ok((Report::Read(Box::new(report)), bytes)),
        Err(e) if e.is_transient() => Err(Error::Scan(e)),
        Err(e) => Ok((
            Report::Invalid(format!("the Job succeeded without a readable report: {e}")),
            0,
        )),
    }
}

/// A chunk report stored in S3, at most [`REPORT_LIMIT`] bytes, and its size.
pub(super) async fn get_report(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<(ChunkReport, usize), ScanError> {
    let location = format!("s3://{bucket}/{key}");
    let bytes = crate::s3::read_object(s3, bucket, key, REPORT_LIMIT)
        .await
        .map_err(crate::scan::read_failure)?;
    let report = serde_json::from_slice(&bytes)
        .map_err(|e| ScanError::InvalidScan(format!("{location} is not a chunk report: {e}")))?;
    Ok((report, bytes.len()))
}
