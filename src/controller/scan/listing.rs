//! The listing of a scan of many objects (a glob, a list of keys, a manifest), one slice per reconcile: the
//! slice's objects pruned by their hive partitions, packed into chunks and written as a segment
//! of the plan, and the cursor kept in status, so that an operator restart resumes the listing
//! where it stopped. The operator holds one slice at a time, whatever the number of objects.

use super::observe::Observed;
use crate::api::Phase;
use crate::api::scan::{
    HivePartitioningMode, ListingStatus, ObjectCounts, OnObjectChangePolicy, S3ParallelScan,
    SchemaMode,
};
use crate::controller::{Error, set_phase};
use crate::scan::ScanError;
use crate::scan::objects::pack::{Packer, Packing};
use crate::scan::objects::segments::{ObjectPlan, PlannedPiece, write_segment};
use crate::scan::objects::{
    DEFAULT_MAX_OBJECTS, FolderPruning, Glob, HivePartitioning, ManifestRef, ObjectChanges,
    ObjectSource, OnObjectChange, Selection, hive, list_page,
};
use crate::scan::plan::{JoinedColumns, Layout, MAX_CHUNKS, ObjectVersion, plan_object};
use crate::scan::sql::{Columns, compile};
use crate::size::parse_size;
use aws_sdk_s3::Client;

/// Most keys one listing page asks for (S3's own bound).
const PAGE_KEYS: usize = 1000;

/// Most listing pages one reconcile reads.
const PAGES_PER_SLICE: usize = 100;

/// Most segments a plan has (10,000 objects a slice make 100 of a million objects): they travel
/// in every chunk's task.
pub(super) const MAX_SEGMENTS: usize = 1000;

/// The objects a scan of many reads, or `None` for a scan of one object.
pub(super) fn selection_of(obj: &S3ParallelScan) -> Option<Result<Selection, ScanError>> {
    let spec = &obj.spec.source;
    let bucket = spec.bucket.clone().unwrap_or_default();
    let source = match (&spec.glob, &spec.keys, &spec.manifest) {
        (Some(glob), _, _) => Glob::new(glob)
            .map(ObjectSource::Glob)
            .map_err(|e| ScanError::InvalidScan(format!("source.glob: {e}"))),
        (None, Some(keys), _) => ObjectSource::keys(keys.clone()),
        (None, None, Some(manifest)) => Ok(ObjectSource::Manifest(ManifestRef {
            bucket: manifest.bucket.clone().unwrap_or_else(|| bucket.clone()),
            key: manifest.key.clone(),
            etag: manifest.etag.clone(),
        })),
        (None, None, None) => return None,
    };
    Some(source.map(|source| {
        Selection {
            bucket,
            source,
            max_objects: spec
                .max_objects
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(DEFAULT_MAX_OBJECTS),
            allow_empty: spec.allow_empty.unwrap_or(false),
            changes: ObjectChanges::default(),
            folders: None,
        }
    }))
}

/// Whether `k=v` folders are columns.
pub(super) fn hive_of(obj: &S3ParallelScan) -> HivePartitioning {
    match obj.spec.format.hive_partitioning {
        None | Some(HivePartitioningMode::Auto) => HivePartitioning::Auto,
        Some(HivePartitioningMode::Enabled) => HivePartitioning::Enabled,
        Some(HivePartitioningMode::Disabled) => HivePartitioning::Disabled,
    }
}

/// Whether columns are bound by name.
pub(super) fn union_by_name(obj: &S3ParallelScan) -> bool {
    obj.spec.format.schema == Some(SchemaMode::UnionByName)
}

/// The hive partitions of `key`, as the scan takes them.
pub(super) fn partitions_of(obj: &S3ParallelScan, key: &str) -> Vec<(String, String)> {
    match hive_of(obj) {
        HivePartitioning::Disabled => Vec::new(),
        _ => hive::partitions(key),
    }
}

/// Key prefix of the plan's segments under the scan's work prefix.
pub(super) fn plan_prefix(work_prefix: &str, scope: &str) -> String {
    format!("{work_prefix}plan-{scope}/")
}

/// The chunks of one slice of objects, numbered on from the plan's.
#[derive(Debug, PartialEq)]
pub(super) struct Slice {
    pub chunks: Vec<Vec<PlannedPiece>>,
    pub bytes: u64,
}

/// Packs `objects` (in key order) into chunks numbered from `first`; an object that is not
/// compressed (by its name) is split in windows when larger than a chunk (a Parquet window is
/// the row groups whose midpoints lie in it, which its worker finds in the footer). Refused past
/// [`MAX_CHUNKS`] chunks in all.
pub(super) fn pack_slice(
    first: u32,
    objects: &[ObjectVersion],
    packing: Packing,
) -> Result<Slice, String> {
    let chunk_size = packing.chunk_size.max(1);
    let splittable =
        |object: &ObjectVersion| crate::scan::Compression::of_name(&object.key).0.is_none();
    let windows = |object: &ObjectVersion| match splittable(object) {
        true => object.size.div_ceil(chunk_size).max(1),
        false => 1,
    };
    let too_many = || format!("the objects make more than {MAX_CHUNKS} chunks; raise chunkSize");
    let mut packer = Packer::new(packing);
    let mut packed = Vec::new();
    for (ordinal, object) in objects.iter().enumerate() {
        // The chunks handed out, and the one the packer holds.
        let planned = u64::from(first) + packed.len() as u64 + 1;
        if planned.saturating_add(windows(object)) > MAX_CHUNKS {
            return Err(too_many());
        }
        packed.extend(packer.add(ordinal as u64, object.size, splittable(object)));
    }
    packed.extend(packer.finish());
    let mut slice = Slice {
        chunks: Vec::with_capacity(packed.len()),
        bytes: objects.iter().map(|o| o.size).fold(0, u64::saturating_add),
    };
    for chunk in packed {
        let mut pieces = Vec::with_capacity(chunk.len());
        for piece in chunk {
            let object = objects
                .get(piece.object as usize)
                .ok_or_else(|| "a piece of no object".to_string())?;
            let window = (windows(object) > 1)
                .then(|| u32::try_from(piece.start / chunk_size).map_err(|_| too_many()))
                .transpose()?;
            pieces.push(PlannedPiece::of(object, window));
        }
        slice.chunks.push(pieces);
    }
    Ok(slice)
}

/// How the scan packs its objects.
fn packing_of(obj: &S3ParallelScan) -> Result<Packing, ScanError> {
    let chunking = &obj.spec.chunking;
    let size = |field: &str, text: &str| {
        parse_size(text).map_err(|e| ScanError::InvalidScan(format!("{field}: {e}")))
    };
    // A Parquet part is one file, of one object's columns: each object is a chunk of its own.
    let parquet_parts = super::observe::output_of(obj)
        .is_some_and(|output| output.format == crate::scan::OutputFormat::Parquet);
    Ok(Packing {
        chunk_size: size("chunkSize", &chunking.chunk_size)?,
        object_open_cost: size("objectOpenCost", &chunking.object_open_cost)?,
        max_objects_per_chunk: match parquet_parts {
            true => 1,
            false => u32::try_from(chunking.max_objects_per_chunk.max(1)).unwrap_or(1),
        },
    })
}

/// A verdict on the scan, or an error to retry.
fn verdict(error: ScanError) -> Result<Observed, Error> {
    match error.is_transient() {
        true => Err(Error::Scan(error)),
        false => Ok(Observed::Refused(error.reason(), error.to_string())),
    }
}

/// Lists the next slice of the scan's objects from the cursor in its status, writes their chunks
/// as the plan's next segment, and gives the status that records them (the listing complete
/// once no page is left).
pub(super) async fn list_slice(
    obj: &S3ParallelScan,
    s3: &Client,
    selection: &Selection,
    (work_bucket, plan_prefix): (&str, &str),
    slice_objects: usize,
) -> Result<Observed, Error> {
    let mut status = obj.status.clone().unwrap_or_default();
    let mut listing = status.listing.clone().unwrap_or_default();
    let mut counts = status.objects.clone().unwrap_or_default();
    let sql = obj
        .spec
        .processor
        .sql
        .clone()
        .unwrap_or_else(|| super::observe::COUNT_QUERY.to_string());
    let prune = match compile(&sql, &Columns::Named) {
        Ok(query) => query,
        Err(e) => return verdict(e.into()),
    };
    let packing = match packing_of(obj) {
        Ok(packing) => packing,
        Err(e) => return verdict(e),
    };
    let hive_mode = hive_of(obj);
    // A glob of hive folders is walked folder by folder: folders the WHERE clause rules out are
    // never listed.
    let pruned_folders = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let selection = &Selection {
        folders: (hive_mode != HivePartitioning::Disabled).then(|| FolderPruning {
            query: prune.clone(),
            pruned: pruned_folders.clone(),
        }),
        ..selection.clone()
    };
    let mut cursor = Some(listing.cursor.clone().unwrap_or_default());
    let mut listed = Vec::new();
    // A sparse glob may match few keys of many pages: the cursor is kept after so many anyway.
    let mut pages = 0;
    while listed.len() < slice_objects && pages < PAGES_PER_SLICE {
        pages += 1;
        let Some(at) = &cursor else { break };
        // A page of a manifest reads its file from the start or the cursor on: the slice is
        // one page.
        let keys = match selection.source {
            ObjectSource::Manifest(_) => slice_objects - listed.len(),
            _ => PAGE_KEYS.min(slice_objects - listed.len()),
        };
        let keys = keys.max(1);
        let (page, next) = match list_page(s3, selection, at, keys).await {
            Ok(page) => page,
            Err(e) => return verdict(e),
        };
        listing.pages = listing.pages.saturating_add(1);
        listed.extend(page);
        cursor = next;
    }
    // Status is read back, and whoever may patch it could put anything in it: no sum overflows.
    counts.matched = counts.matched.saturating_add(listed.len() as i64);
    let folders = pruned_folders.load(std::sync::atomic::Ordering::Relaxed);
    counts.pruned_folders = counts
        .pruned_folders
        .saturating_add(i64::try_from(folders).unwrap_or(i64::MAX));
    if counts.matched as u64 > selection.max_objects {
        return verdict(ScanError::TooManyObjects(format!(
            "{} selects more than {} objects",
            selection.describe(),
            selection.max_objects
        )));
    }
    // The first object's columns and partitions: the query is compiled against them before any
    // Job (even when every object is then pruned), and every object must have them (its
    // columns, unless they are bound by name).
    if listing.first_key.is_none() {
        match first_layout(obj, s3, &listed).await {
            Ok(Some(mut layout)) => {
                layout.joined = JoinedColumns {
                    partitions: partitions_of(obj, &layout.object.key),
                    union_by_name: union_by_name(obj),
                };
                if let Err(e) = layout.compile(&sql) {
                    return verdict(e);
                }
                listing.columns = layout.columns;
                listing.first_key = Some(layout.object.key);
            }
            // Every object of the slice changed since it was listed: the next slice's first
            // object gives the columns.
            Ok(None) => {}
            Err(e) => return verdict(e),
        }
    }
    // Partition keys are the first listed object's (those of the first key planned, when it
    // is another, are the same).
    let first_key = listing
        .first_key
        .clone()
        .or_else(|| listed.first().map(|first| first.key.clone()))
        .unwrap_or_default();
    let partition_keys = |key: &str| -> Vec<String> {
        partitions_of(obj, key)
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    };
    let first_keys = partition_keys(&first_key);
    let mut kept = Vec::with_capacity(listed.len());
    for version in listed {
        let partitions = partitions_of(obj, &version.key);
        if hive_mode == HivePartitioning::Enabled && partitions.is_empty() {
            return verdict(ScanError::InvalidScan(format!(
                "{} has no hive partitions (key=value folders), and hive partitioning is enabled",
                version.url()
            )));
        }
        let keys: Vec<&String> = partitions.iter().map(|(name, _)| name).collect();
        if keys.iter().copied().ne(first_keys.iter()) {
            return verdict(ScanError::HeaderMismatch(format!(
                "{} has partition keys {keys:?}, but {first_key} has {first_keys:?}: every \
                 object of a scan has the same partition keys",
                version.url()
            )));
        }
        if !hive::may_match(&prune, &partitions) {
            counts.pruned = counts.pruned.saturating_add(1);
            continue;
        }
        kept.push((version, partitions));
    }
    let kept: Vec<ObjectVersion> = kept.into_iter().map(|(version, _)| version).collect();
    let first_chunk = u32::try_from(listing.chunks).unwrap_or(u32::MAX);
    let slice = match pack_slice(first_chunk, &kept, packing) {
        Ok(slice) => slice,
        Err(message) => return verdict(ScanError::TooManyObjects(message)),
    };
    if !slice.chunks.is_empty() {
        let number = listing.segments.len();
        if number >= MAX_SEGMENTS {
            return verdict(ScanError::TooManyObjects(format!(
                "the plan would have more than {MAX_SEGMENTS} segments; the operator's \
                 --listing-slice is too small for this many objects"
            )));
        }
        let written = write_segment(
            s3,
            (work_bucket, plan_prefix),
            number,
            first_chunk,
            &slice.chunks,
        )
        .await;
        match written {
            Ok(segment) => listing.segments.push(segment),
            Err(e) => return verdict(e),
        }
    }
    listing.chunks = listing.chunks.saturating_add(slice.chunks.len() as i32);
    listing.bytes = listing
        .bytes
        .saturating_add(i64::try_from(slice.bytes).unwrap_or(i64::MAX));
    counts.planned = counts.planned.saturating_add(kept.len() as i64);
    counts.progress = format!("{}/{}", counts.scanned, counts.planned);
    listing.complete = cursor.is_none();
    listing.cursor = cursor;
    listing.plan_at = Some(format!("s3://{work_bucket}/{plan_prefix}"));
    if listing.complete
        && counts.planned == 0
        && counts.pruned == 0
        && counts.pruned_folders == 0
        && !selection.allow_empty
    {
        return verdict(ScanError::NoObjects(format!(
            "{} selects no object",
            selection.describe()
        )));
    }
    let message = format!(
        "listed {} objects in {} pages ({} pruned by their partitions, {} folders unlisted), {} \
         chunks planned{}",
        counts.matched,
        listing.pages,
        counts.pruned,
        counts.pruned_folders,
        listing.chunks,
        if listing.complete { "" } else { "; listing on" }
    );
    status.listing = Some(listing);
    status.objects = Some(counts);
    set_phase(
        &mut status,
        Phase::Pending,
        "Listing",
        &message,
        obj.metadata.generation,
    );
    Ok(Observed::Listed(Box::new(status)))
}

/// The layout of the first of `listed` that can be planned. One changed or gone since it was
/// listed is passed over when the scan says `onObjectChange: Skip` (the chunk that reads it
/// leaves it out, and counts it); any other failure is the scan's. `None`: every one changed.
async fn first_layout(
    obj: &S3ParallelScan,
    s3: &Client,
    listed: &[ObjectVersion],
) -> Result<Option<Layout>, ScanError> {
    let changes = ObjectChanges::new(on_object_change(obj), 0);
    for first in listed {
        let request = super::observe::plan_request(obj, &first.bucket, &first.key)?;
        match plan_object(s3, &request, first.clone()).await {
            Ok(layout) => return Ok(Some(layout)),
            Err(error) if changes.leaves_out(&error) => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}

/// What becomes of an object changed since it was listed.
fn on_object_change(obj: &S3ParallelScan) -> OnObjectChange {
    match obj.spec.source.on_object_change {
        Some(OnObjectChangePolicy::Skip) => OnObjectChange::Skip,
        _ => OnObjectChange::Fail,
    }
}

/// The plan the completed listing in `listing` wrote.
pub(super) fn plan_of(
    obj: &S3ParallelScan,
    listing: &ListingStatus,
    counts: Option<&ObjectCounts>,
    (bucket, work_bucket, plan_prefix): (&str, &str, &str),
) -> Option<ObjectPlan> {
    Some(ObjectPlan {
        bucket: bucket.to_string(),
        segment_bucket: work_bucket.to_string(),
        prefix: plan_prefix.to_string(),
        segments: listing.segments.clone(),
        chunks: u32::try_from(listing.chunks).ok()?,
        objects: u64::try_from(counts.map_or(0, |c| c.planned)).ok()?,
        hive: hive_of(obj),
        on_object_change: on_object_change(obj),
        max_failed_objects: obj
            .spec
            .source
            .max_failed_objects
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::InputFormat;

    const CSV: InputFormat = InputFormat::Csv {
        delimiter: b',',
        quote: b'"',
        header: true,
    };

    fn object(key: &str, size: u64) -> ObjectVersion {
        ObjectVersion {
            bucket: "b".into(),
            key: key.into(),
            size,
            etag: "\"e\"".into(),
            modified: None,
        }
    }

    fn piece(key: &str, size: u64, window: Option<u32>) -> PlannedPiece {
        PlannedPiece {
            key: key.into(),
            etag: "\"e\"".into(),
            size,
            window,
            modified: None,
        }
    }

    #[test]
    fn small_objects_share_chunks_large_ones_are_windows_numbered_on() {
        let packing = Packing {
            chunk_size: 100,
            object_open_cost: 10,
            max_objects_per_chunk: 10,
        };
        let objects = [
            object("a.csv", 30),
            object("b.csv", 30),
            object("c.csv", 250),
            object("d.csv.gz", 250),
            object("e.csv", 5),
        ];
        let slice = pack_slice(7, &objects, packing).unwrap();
        assert_eq!(
            slice.chunks,
            [
                vec![piece("a.csv", 30, None), piece("b.csv", 30, None)],
                vec![piece("c.csv", 250, Some(0))],
                vec![piece("c.csv", 250, Some(1))],
                vec![piece("c.csv", 250, Some(2))],
                vec![piece("d.csv.gz", 250, None)],
                vec![piece("e.csv", 5, None)],
            ]
        );
        // A text window after the first starts mid-record, maybe: its start state is the window
        // before's end, which its worker says in its report.
        let continuing: Vec<u32> = (7..)
            .zip(&slice.chunks)
            .filter(|(_, pieces)| pieces[0].continues(CSV))
            .map(|(number, _)| number)
            .collect();
        assert_eq!(continuing, [9, 10]);
        assert_eq!(slice.bytes, 565);
        // A Parquet object is split in windows without its footer read: its workers read it.
        let parquet = pack_slice(0, &[object("p.parquet", 150)], packing).unwrap();
        assert_eq!(
            parquet.chunks,
            [
                vec![piece("p.parquet", 150, Some(0))],
                vec![piece("p.parquet", 150, Some(1))]
            ]
        );
        assert!(
            parquet
                .chunks
                .iter()
                .all(|pieces| !pieces[0].continues(InputFormat::Parquet)),
            "a Parquet window starts in a known state"
        );
    }

    /// The peak resident set of this process, in KiB (`VmHWM`), as the note on the test says.
    fn peak_rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
                line.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0)
    }

    /// A million objects listed and planned the way the operator does it, a slice of 10,000 per
    /// reconcile, each reconcile from the status the one before gave: every object planned once,
    /// and the heap the listing holds is one slice's, the same at the last slice as at the second.
    #[tokio::test(flavor = "current_thread")]
    async fn a_million_keys_are_planned_a_slice_at_a_time_in_flat_memory() {
        use crate::scan::objects::synthetic::{SyntheticStore, key};
        const OBJECTS: u64 = 1_000_000;
        const SLICE: usize = 10_000;
        let store = SyntheticStore::start(OBJECTS).await;
        let s3 = store.client();
        let mut obj: S3ParallelScan = serde_json::from_value(serde_json::json!({
            "apiVersion": "s3flow.io/v1alpha1", "kind": "S3ParallelScan",
            "metadata": {"name": "million", "namespace": "a", "generation": 1},
            "spec": {
                "source": {"bucket": "b", "glob": "d/*.jsonl", "endpoint": store.endpoint},
                "format": {"jsonLines": {}},
                "chunking": {"chunkSize": "1Gi", "objectOpenCost": "0",
                    "maxObjectsPerChunk": 1000, "parallelism": 8},
                "processor": {"sql": "SELECT COUNT(*) FROM S3Object"},
            }
        }))
        .unwrap();
        let selection = selection_of(&obj).unwrap().unwrap();
        let (started, rss_before) = (std::time::Instant::now(), peak_rss_kib());
        let mut peaks = Vec::new();
        for _ in 0..=OBJECTS as usize / SLICE {
            let held = crate::held::restart_peak();
            let listed = list_slice(&obj, &s3, &selection, ("b", "w/plan-1/"), SLICE).await;
            let status = match listed {
                Ok(Observed::Listed(status)) => status,
                Ok(Observed::Refused(reason, message)) => panic!("{reason}: {message}"),
                Ok(_) => panic!("a slice is listed"),
                Err(e) => panic!("{e}"),
            };
            peaks.push(crate::held::peak() - held);
            obj.status = Some(*status);
            if obj
                .status
                .as_ref()
                .unwrap()
                .listing
                .as_ref()
                .unwrap()
                .complete
            {
                break;
            }
        }
        let status = obj.status.unwrap();
        let (listing, counts) = (status.listing.unwrap(), status.objects.unwrap());
        assert!(listing.complete);
        assert_eq!((counts.matched, counts.planned), (1_000_000, 1_000_000));
        assert_eq!((listing.chunks, listing.segments.len()), (1000, 100));
        assert_eq!(listing.pages, 1000);
        assert_eq!(listing.first_key.as_deref(), Some(key(0).as_str()));
        let puts = store.puts.lock().unwrap().clone();
        assert_eq!(puts.len(), 100, "one segment a slice");
        let status_bytes = serde_json::to_vec(&listing).unwrap().len();
        assert!(status_bytes < 16 << 10, "{status_bytes} bytes of status");
        // The first slice also plans the first object; after it, each slice holds as much as the
        // second, whatever the number listed before it.
        let (second, most) = (peaks[1], peaks[1..].iter().copied().max().unwrap());
        assert!(
            most <= second + second / 4,
            "a slice held {most} bytes, the second {second}"
        );
        assert!(most < 64 << 20, "a slice held {most} bytes");
        eprintln!(
            "{} objects in {} slices: {:.1} s, a slice held at most {:.1} MiB (the second {:.1}), \
             segments {} to {} bytes, status.listing {status_bytes} bytes, peak RSS {} -> {} MiB",
            counts.matched,
            peaks.len(),
            started.elapsed().as_secs_f64(),
            most as f64 / f64::from(1 << 20),
            second as f64 / f64::from(1 << 20),
            puts.iter().min().unwrap(),
            puts.iter().max().unwrap(),
            rss_before / 1024,
            peak_rss_kib() / 1024,
        );
    }

    /// The first object changed since it was listed: with `onObjectChange: Skip` the next one
    /// gives the columns and the first is planned still (its chunk leaves it out and counts
    /// it); by default the scan fails.
    #[tokio::test]
    async fn a_first_object_changed_since_listed_is_passed_over_when_skipped() {
        use crate::scan::objects::synthetic::{SyntheticStore, key};
        let store = SyntheticStore::start(3).await;
        store.changed.store(0, std::sync::atomic::Ordering::Relaxed);
        let s3 = store.client();
        for policy in ["Skip", "Fail"] {
            let obj: S3ParallelScan = serde_json::from_value(serde_json::json!({
                "apiVersion": "s3flow.io/v1alpha1", "kind": "S3ParallelScan",
                "metadata": {"name": "changed", "namespace": "a", "generation": 1},
                "spec": {
                    "source": {"bucket": "b", "glob": "d/*.jsonl", "endpoint": store.endpoint,
                        "onObjectChange": policy, "maxFailedObjects": 1},
                    "format": {"jsonLines": {}},
                    "processor": {"sql": "SELECT COUNT(*) FROM S3Object"},
                }
            }))
            .unwrap();
            let selection = selection_of(&obj).unwrap().unwrap();
            let listed = list_slice(&obj, &s3, &selection, ("b", "w/plan-1/"), 100).await;
            match (policy, listed) {
                ("Skip", Ok(Observed::Listed(status))) => {
                    let listing = status.listing.unwrap();
                    assert_eq!(listing.first_key.as_deref(), Some(key(1).as_str()));
                    assert_eq!(status.objects.unwrap().planned, 3);
                }
                ("Fail", Ok(Observed::Refused(reason, message))) => {
                    assert_eq!(reason, "ObjectChanged", "{message}");
                }
                (policy, Err(e)) => panic!("{policy}: {e}"),
                (policy, Ok(_)) => panic!("{policy}: not what the policy says"),
            }
        }
    }

    /// Ten thousand objects, each split in two windows: every second chunk goes on with the
    /// object the chunk before began. Its worker knows it from its piece, so the plan lists no
    /// such chunks, and status stays small whatever their number.
    #[tokio::test]
    async fn thousands_of_split_objects_are_planned_with_a_small_status() {
        use crate::scan::objects::synthetic::{BODY, SyntheticStore};
        const OBJECTS: u64 = 10_000;
        let store = SyntheticStore::start(OBJECTS).await;
        let s3 = store.client();
        let window = BODY.len() / 2;
        let obj: S3ParallelScan = serde_json::from_value(serde_json::json!({
            "apiVersion": "s3flow.io/v1alpha1", "kind": "S3ParallelScan",
            "metadata": {"name": "split", "namespace": "a", "generation": 1},
            "spec": {
                "source": {"bucket": "b", "glob": "d/*.jsonl", "endpoint": store.endpoint},
                "format": {"jsonLines": {}},
                "chunking": {"chunkSize": window.to_string(), "objectOpenCost": "0"},
                "processor": {"sql": "SELECT COUNT(*) FROM S3Object"},
            }
        }))
        .unwrap();
        let selection = selection_of(&obj).unwrap().unwrap();
        let listed = list_slice(&obj, &s3, &selection, ("b", "w/plan-1/"), 10_000).await;
        let status = match listed {
            Ok(Observed::Listed(status)) => status,
            Ok(Observed::Refused(reason, message)) => panic!("{reason}: {message}"),
            Ok(_) => panic!("a slice is listed"),
            Err(e) => panic!("{e}"),
        };
        let listing = status.listing.unwrap();
        assert!(listing.complete);
        assert_eq!(listing.chunks as u64, 2 * OBJECTS);
        let status_bytes = serde_json::to_vec(&listing).unwrap().len();
        assert!(status_bytes < 4 << 10, "{status_bytes} bytes of status");
    }

    #[test]
    fn a_plan_past_the_chunk_bound_is_refused() {
        let packing = Packing {
            chunk_size: 1,
            object_open_cost: 0,
            max_objects_per_chunk: 1,
        };
        let huge = [object("big.csv", MAX_CHUNKS + 1)];
        assert!(
            pack_slice(0, &huge, packing)
                .unwrap_err()
                .contains("raise chunkSize")
        );
        let near = [object("a.csv", 1)];
        assert!(pack_slice(MAX_CHUNKS as u32, &near, packing).is_err());
    }
}
