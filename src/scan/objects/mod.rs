//! Many objects as one scan: which objects (one key, a glob, a list of keys), listed as a stream
//! in key order with the version every read of them is pinned to, and planned one by one. Memory
//! stays one listing page and the objects being planned, whatever the number of objects.

pub mod changes;
pub mod glob;
pub mod hive;
pub mod manifest;
pub mod pack;
pub(crate) mod pieces;
pub mod segments;
#[cfg(test)]
pub(crate) mod synthetic;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::Client;
use futures::{Stream, StreamExt, TryStreamExt};

use super::plan::{JoinedColumns, Layout, ObjectVersion, PlanRequest, plan_object_to_run};
use super::{ScanError, read_failure, s3_error};
pub use changes::{ObjectChanges, ObjectFailure, OnObjectChange, SkippedObjects};
pub use glob::{Glob, GlobError, is_glob};
pub use hive::{FolderPruning, HivePartitioning};
pub use manifest::ManifestRef;

use super::sql::Query;

/// Most keys an explicit list may name (a manifest takes more).
pub const MAX_KEYS: usize = 1000;

/// Most objects a scan takes unless it says otherwise.
pub const DEFAULT_MAX_OBJECTS: u64 = 1_000_000;

/// Objects asked for their version (HEAD) or planned at once.
pub(super) const PLANNING_CONCURRENCY: usize = 16;

/// Which objects of a bucket a scan reads.
#[derive(Clone, Debug)]
pub enum ObjectSource {
    /// One object.
    Key(String),
    /// Every object whose key the glob matches.
    Glob(Glob),
    /// These keys, in key order, each once.
    Keys(Vec<String>),
    /// The objects a manifest names (a Batch Operations CSV or an Inventory), in its order.
    Manifest(ManifestRef),
}

impl ObjectSource {
    /// A list of keys, refused when it is longer than [`MAX_KEYS`] or names a folder.
    pub fn keys(mut keys: Vec<String>) -> Result<ObjectSource, ScanError> {
        if keys.len() > MAX_KEYS {
            return Err(ScanError::InvalidScan(format!(
                "{} keys given; a list takes at most {MAX_KEYS} (use a glob or a manifest)",
                keys.len()
            )));
        }
        if let Some(key) = keys.iter().find(|k| k.is_empty() || k.ends_with('/')) {
            return Err(ScanError::InvalidScan(format!(
                "key {key:?} names no object (a key is not empty and does not end in /)"
            )));
        }
        keys.sort();
        keys.dedup();
        Ok(ObjectSource::Keys(keys))
    }

    /// The source within its bucket, as a message names it.
    fn describe(&self) -> String {
        match self {
            ObjectSource::Key(key) => key.clone(),
            ObjectSource::Glob(glob) => glob.text().to_string(),
            ObjectSource::Keys(keys) => format!("({} keys)", keys.len()),
            ObjectSource::Manifest(manifest) => {
                format!("(the objects of s3://{}/{})", manifest.bucket, manifest.key)
            }
        }
    }
}

/// The objects a scan reads, and its bounds.
#[derive(Clone, Debug)]
pub struct Selection {
    /// The bucket they are in.
    pub bucket: String,
    /// Which of its objects.
    pub source: ObjectSource,
    /// More objects than this fail the scan (TooManyObjects) before any is read.
    pub max_objects: u64,
    /// Whether no object at all is a scan of nothing rather than a failure (NoObjects).
    pub allow_empty: bool,
    /// What becomes of an object gone since it was listed (a key or manifest row without one).
    pub changes: ObjectChanges,
    /// With hive partitions: a glob with `name=<wildcard>` folders lists them level by level,
    /// and descends only into those the query's WHERE clause can match.
    pub folders: Option<FolderPruning>,
}

impl Selection {
    /// `s3://bucket/<key, glob or count of keys>`, as messages name the selection.
    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.source.describe())
    }

    /// Whether its listing could reach keys under `prefix` of `bucket` (a glob listing a prefix
    /// that holds it, or lies in it): row output written there would be read back as it is
    /// written.
    pub fn lists_under(&self, bucket: &str, prefix: &str) -> bool {
        let ObjectSource::Glob(glob) = &self.source else {
            return false;
        };
        bucket == self.bucket
            && glob
                .prefixes()
                .iter()
                .any(|listed| prefix.starts_with(listed.as_str()) || listed.starts_with(prefix))
    }
}

/// The selected objects in key order (a manifest's in its order), each with its size and ETag. A
/// glob lists its prefixes a page at a time; keys are asked for with HEAD, as are a Batch
/// Operations manifest's (an Inventory gives them). Fails with NoObjects when nothing is selected
/// (unless allowed), and with TooManyObjects past `max_objects`.
pub fn list(
    s3: &Client,
    selection: &Selection,
) -> impl Stream<Item = Result<ObjectVersion, ScanError>> + Send + use<> {
    let versions = match &selection.source {
        ObjectSource::Key(key) => heads(s3, selection, vec![key.clone()]),
        ObjectSource::Keys(keys) => heads(s3, selection, keys.clone()),
        ObjectSource::Glob(glob) => listing(s3, selection, glob.clone()),
        ObjectSource::Manifest(manifest) => manifest::versions(s3, manifest, selection),
    };
    bounded(versions, selection)
}

/// `versions`, failing past the selection's bounds.
fn bounded<S>(
    versions: S,
    selection: &Selection,
) -> impl Stream<Item = Result<ObjectVersion, ScanError>> + Send + use<S>
where
    S: Stream<Item = Result<ObjectVersion, ScanError>> + Send + 'static,
{
    let (max, allow_empty) = (selection.max_objects, selection.allow_empty);
    let what = selection.describe();
    // Folders pruned unlisted held objects the query rules out: an empty answer, not none.
    let pruned_folders = selection.folders.as_ref().map(|f| f.pruned.clone());
    let pruned = move || {
        pruned_folders
            .as_ref()
            .is_some_and(|p| p.load(Ordering::Relaxed) > 0)
    };
    let end = futures::stream::once(async { None });
    versions
        .map(Some)
        .chain(end)
        .scan(0u64, move |count, version| {
            let item = match version {
                Some(Ok(_)) if *count == max => Some(Err(ScanError::TooManyObjects(format!(
                    "{what} selects more than {max} objects"
                )))),
                Some(version) => {
                    *count += u64::from(version.is_ok());
                    Some(version)
                }
                None if *count == 0 && !allow_empty && !pruned() => Some(Err(
                    ScanError::NoObjects(format!("{what} selects no object")),
                )),
                None => None,
            };
            futures::future::ready(item)
        })
}

/// The versions of `keys` by HEAD, in their order.
fn heads(
    s3: &Client,
    selection: &Selection,
    keys: Vec<String>,
) -> futures::stream::BoxStream<'static, Result<ObjectVersion, ScanError>> {
    let (s3, selection) = (s3.clone(), selection.clone());
    futures::stream::iter(keys)
        .map(move |key| head(&s3, &selection, key))
        .buffered(PLANNING_CONCURRENCY)
        .filter_map(|version| futures::future::ready(version.transpose()))
        .boxed()
}

/// The version of `key` by HEAD; `None` when it is gone and the selection skips such objects.
fn head(
    s3: &Client,
    selection: &Selection,
    key: String,
) -> impl Future<Output = Result<Option<ObjectVersion>, ScanError>> + use<> {
    let (s3, bucket, changes) = (
        s3.clone(),
        selection.bucket.clone(),
        selection.changes.clone(),
    );
    async move {
        let version = crate::s3::object_head(&s3, &bucket, &key)
            .await
            .map_err(read_failure)
            .and_then(|head| {
                ObjectVersion::pinned(&bucket, &key, head.size, head.etag)
                    .map(|version| version.modified_at(head.modified.as_ref()))
            });
        match version {
            Ok(version) => Ok(Some(version)),
            Err(error) => changes.skip(&key, error).map(|()| None),
        }
    }
}

/// The objects a glob matches: its prefixes listed one after the other (so in key order), or,
/// with folder pruning and hive folders in the glob, the objects of each folder kept, a page of
/// the folder walk at a time.
fn listing(
    s3: &Client,
    selection: &Selection,
    glob: Glob,
) -> futures::stream::BoxStream<'static, Result<ObjectVersion, ScanError>> {
    let (s3, bucket) = (s3.clone(), selection.bucket.clone());
    if glob.hive_folders().is_some() && selection.folders.is_some() {
        let selection = selection.clone();
        // `None`: the walk is done; else its position.
        return futures::stream::try_unfold(Some(None), move |at: Option<Option<String>>| {
            let (s3, selection, glob) = (s3.clone(), selection.clone(), glob.clone());
            async move {
                let (Some(after), Some(folders), Some(pruning)) =
                    (at, glob.hive_folders(), &selection.folders)
                else {
                    return Ok::<_, ScanError>(None);
                };
                let walk = (&glob, folders, pruning);
                let (objects, next) = folder_page(&s3, &selection, walk, after, MAX_KEYS).await?;
                let objects = futures::stream::iter(objects.into_iter().map(Ok));
                Ok(Some((objects, next.map(Some))))
            }
        })
        .try_flatten()
        .boxed();
    }
    futures::stream::iter(glob.prefixes().to_vec())
        .map(move |prefix| {
            let pages = Pages {
                s3: s3.clone(),
                bucket: bucket.clone(),
                glob: glob.clone(),
                prefix,
                next: Some(None),
            };
            pages.objects()
        })
        .flatten()
        .boxed()
}

/// Where a listing in slices stands: the glob's prefix being listed (by its place) and the last
/// key listed under it, or the last key of a list asked for.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ListingCursor {
    /// The prefix being listed, by its place in the glob's prefixes (0 for a list of keys).
    #[serde(default)]
    pub prefix: u32,
    /// The last key listed; `None`: from the prefix's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Of a manifest (whose data file `prefix` numbers): the bytes of the file listed, through
    /// the last row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Of a manifest: its ETag when the listing began, which every later page pins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Keys under this folder are the operator's own (plans, reports): no listing returns them.
pub const WORK_FOLDER: &str = ".s3flow/";

/// One page of the selection (a glob's or a list of keys', at most `max_keys` keys) from
/// `cursor`: the objects it selects, and where the next page starts (`None`: none is left). A
/// listing so taken in slices resumes where it stopped.
pub async fn list_page(
    s3: &Client,
    selection: &Selection,
    cursor: &ListingCursor,
    max_keys: usize,
) -> Result<(Vec<ObjectVersion>, Option<ListingCursor>), ScanError> {
    let bucket = &selection.bucket;
    let after = cursor.after.clone();
    match &selection.source {
        ObjectSource::Glob(glob) => {
            if let (Some(folders), Some(pruning)) = (glob.hive_folders(), &selection.folders) {
                let (objects, at) =
                    folder_page(s3, selection, (glob, folders, pruning), after, max_keys).await?;
                let next = at.map(|after| ListingCursor {
                    after: Some(after),
                    ..ListingCursor::default()
                });
                return Ok((objects, next));
            }
            let Some(prefix) = glob.prefixes().get(cursor.prefix as usize) else {
                return Ok((Vec::new(), None));
            };
            let page = s3
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_start_after(after)
                .max_keys(i32::try_from(max_keys).unwrap_or(1000))
                .send()
                .await
                .map_err(|e| s3_error(&format!("LIST s3://{bucket}/{prefix}"), e))?;
            let mut matched = Vec::new();
            for object in page.contents() {
                let Some(key) = object
                    .key()
                    .filter(|key| glob.matches(key) && !key.starts_with(WORK_FOLDER))
                else {
                    continue;
                };
                matched.push(listed_version(bucket, key, object)?);
            }
            let last = page.contents().last().and_then(|o| o.key());
            let next = match (page.is_truncated() == Some(true), last) {
                (true, Some(last)) => Some(ListingCursor {
                    prefix: cursor.prefix,
                    after: Some(last.to_string()),
                    ..ListingCursor::default()
                }),
                _ => (cursor.prefix as usize + 1 < glob.prefixes().len()).then(|| ListingCursor {
                    prefix: cursor.prefix + 1,
                    ..ListingCursor::default()
                }),
            };
            Ok((matched, next))
        }
        ObjectSource::Keys(keys) => {
            let start = match &after {
                Some(after) => keys.partition_point(|k| k <= after),
                None => 0,
            };
            let page: Vec<String> = keys
                .iter()
                .skip(start)
                .take(max_keys.max(1))
                .cloned()
                .collect();
            let next = page
                .last()
                .filter(|_| start + page.len() < keys.len())
                .map(|last| ListingCursor {
                    after: Some(last.clone()),
                    ..ListingCursor::default()
                });
            let versions = heads(s3, selection, page).try_collect().await?;
            Ok((versions, next))
        }
        ObjectSource::Manifest(manifest) => {
            manifest::page(s3, manifest, selection, cursor, max_keys).await
        }
        ObjectSource::Key(_) => Err(ScanError::InvalidScan(
            "one object is not listed in slices".into(),
        )),
    }
}

/// The version a listing gives of `object`, whose key is `key`, in `bucket`: its size, ETag and
/// last-modified time.
fn listed_version(
    bucket: &str,
    key: &str,
    object: &aws_sdk_s3::types::Object,
) -> Result<ObjectVersion, ScanError> {
    let size = u64::try_from(object.size().unwrap_or_default()).unwrap_or_default();
    ObjectVersion::pinned(bucket, key, size, object.e_tag().map(str::to_string))
        .map(|version| version.modified_at(object.last_modified()))
}

/// The continuation token of the page after `page` (`Some`), or `None` when it was the last.
fn next_page(
    page: &aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output,
) -> Option<Option<String>> {
    page.next_continuation_token()
        .filter(|_| page.is_truncated() == Some(true))
        .map(|token| Some(token.to_string()))
}

/// Where the listing of one prefix is.
struct Pages {
    s3: Client,
    bucket: String,
    glob: Glob,
    prefix: String,
    /// The next page's continuation token (`Some(None)`: the first page), `None` after the last.
    next: Option<Option<String>>,
}

impl Pages {
    /// The objects under the prefix that the glob matches, a page at a time.
    fn objects(self) -> impl Stream<Item = Result<ObjectVersion, ScanError>> + Send + use<> {
        futures::stream::try_unfold(self, |mut pages| async move {
            let Some(token) = pages.next.take() else {
                return Ok::<_, ScanError>(None);
            };
            let page = pages
                .s3
                .list_objects_v2()
                .bucket(&pages.bucket)
                .prefix(&pages.prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| {
                    s3_error(&format!("LIST s3://{}/{}", pages.bucket, pages.prefix), e)
                })?;
            pages.next = next_page(&page);
            let mut matched = VecDeque::new();
            for object in page.contents() {
                let Some(key) = object.key().filter(|key| pages.glob.matches(key)) else {
                    continue;
                };
                matched.push_back(listed_version(&pages.bucket, key, object));
            }
            Ok(Some((futures::stream::iter(matched), pages)))
        })
        .try_flatten()
    }
}

/// LIST requests one page of a folder walk in slices makes at most.
const FOLDER_PAGE_REQUESTS: usize = 10;

/// A folder of a walk in slices: listed by subfolders (or, at the last hive level, by objects)
/// a page at a time.
struct Frame {
    prefix: String,
    level: usize,
    /// The next page's continuation token (`Some(None)`: the first page), `None` after the last.
    next: Option<Option<String>>,
    /// Subfolders listed and not walked yet, in key order, each with whether the WHERE clause
    /// may match its partitions.
    listed: VecDeque<(String, bool)>,
}

/// Whether the walk is past all of folder `folder` once it is at `position` (a key listed, or a
/// folder passed whole): `position` is at or after it, and not inside it.
fn passed(folder: &str, position: Option<&str>) -> bool {
    position.is_some_and(|at| at >= folder && (at == folder || !at.starts_with(folder)))
}

/// One page of a glob's hive folder walk, depth first in key order, each level one delimited
/// LIST of its folders, a folder the WHERE clause rules out never listed (counted in
/// `pruning`), the objects of the folders kept listed in each: from `after`, the walk's
/// position (the last key listed, or the last folder passed whole, ending in `/`), at most
/// `max_keys` objects and [`FOLDER_PAGE_REQUESTS`] LISTs, and the position to go on from
/// (`None`: the walk is done). Resuming from a position re-lists the folders that hold it, and
/// goes on past it. Memory is one page of folders per level.
async fn folder_page(
    s3: &Client,
    selection: &Selection,
    (glob, folders, pruning): (&Glob, &glob::HiveFolders, &FolderPruning),
    after: Option<String>,
    max_keys: usize,
) -> Result<(Vec<ObjectVersion>, Option<String>), ScanError> {
    let bucket = &selection.bucket;
    let mut position = after;
    let mut matched = Vec::new();
    let mut requests = 0;
    let mut stack = vec![Frame {
        prefix: folders.root.clone(),
        level: 0,
        next: Some(None),
        listed: VecDeque::new(),
    }];
    while let Some(top) = stack.last_mut() {
        if (matched.len() >= max_keys || requests >= FOLDER_PAGE_REQUESTS) && position.is_some() {
            return Ok((matched, position));
        }
        let leaf = top.level == folders.depth();
        // Folders are passed in key order, so that the position always says all before it is
        // done: a folder ruled out is passed when its turn comes.
        if let Some((folder, may_match)) = top.listed.pop_front() {
            if !may_match {
                pruning.pruned.fetch_add(1, Ordering::Relaxed);
                position = Some(folder);
                continue;
            }
            let level = top.level + 1;
            stack.push(Frame {
                level,
                prefix: folder,
                next: Some(None),
                listed: VecDeque::new(),
            });
            continue;
        }
        let Some(token) = top.next.take() else {
            // The folder is done whole (the root last: the walk is done).
            let done = stack.pop().map(|frame| frame.prefix);
            if !stack.is_empty() {
                position = done;
            }
            continue;
        };
        // The first page of a folder holding the position starts at it.
        let start_after = position
            .as_deref()
            .filter(|_| token.is_none())
            .and_then(|at| Some((at, at.strip_prefix(top.prefix.as_str())?)))
            .map(|(at, inside)| match leaf {
                true => at.to_string(),
                // The position's folder at this level, listed again (and compared below).
                false => format!(
                    "{}{}",
                    top.prefix,
                    inside.split('/').next().unwrap_or_default()
                ),
            });
        let listed = match leaf {
            true => format!("{}{}", top.prefix, folders.rest),
            false => format!("{}{}", top.prefix, folders.level_start(top.level)),
        };
        let mut request = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(&listed)
            .set_start_after(start_after)
            .set_continuation_token(token);
        request = match leaf {
            true => request.max_keys(
                i32::try_from(max_keys.saturating_sub(matched.len()))
                    .map_or(1000, |n| n.clamp(1, 1000)),
            ),
            false => request.delimiter("/"),
        };
        requests += 1;
        let page = request
            .send()
            .await
            .map_err(|e| s3_error(&format!("LIST s3://{bucket}/{listed}"), e))?;
        top.next = next_page(&page);
        if leaf {
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                if glob.matches(key) && !key.starts_with(WORK_FOLDER) {
                    matched.push(listed_version(bucket, key, object)?);
                }
                position = Some(key.to_string());
            }
            continue;
        }
        for folder in page.common_prefixes().iter().filter_map(|c| c.prefix()) {
            let name = folder
                .strip_prefix(top.prefix.as_str())
                .and_then(|name| name.strip_suffix('/'));
            if passed(folder, position.as_deref())
                || !name.is_some_and(|name| folders.takes(top.level, name))
            {
                continue;
            }
            let partitions = hive::partitions(&format!("{folder}_"));
            let may_match = hive::may_match(&pruning.query, &partitions);
            top.listed.push_back((folder.to_string(), may_match));
        }
    }
    Ok((matched, None))
}

/// How the listed objects are planned.
#[derive(Clone, Debug)]
pub struct Planning {
    /// The format and chunking of every object (its bucket and key aside).
    pub request: PlanRequest,
    /// Whether `k=v` folders of keys are columns.
    pub hive: HivePartitioning,
    /// The query, compiled with named columns: an object whose partitions rule out every row is
    /// pruned, never read.
    pub prune: Option<Query>,
    /// Objects pruned so far.
    pub pruned: Arc<AtomicU64>,
    /// Columns are bound by name: an object may lack some (NULL in its records) or have others.
    pub union_by_name: bool,
    /// What becomes of an object changed since it was listed.
    pub changes: ObjectChanges,
}

/// What every object of a scan must share with the first: its columns and partition keys.
struct Shape {
    key: String,
    columns: Vec<String>,
    partition_keys: Vec<String>,
}

impl Shape {
    fn of(layout: &Layout) -> Shape {
        Shape {
            key: layout.object.key.clone(),
            columns: layout.columns.clone(),
            partition_keys: layout
                .joined
                .partitions
                .iter()
                .map(|(k, _)| k.clone())
                .collect(),
        }
    }

    /// Refuses `layout` when it differs from the first object: HeaderMismatch naming both.
    fn check(&self, layout: &Layout) -> Result<(), ScanError> {
        let other = Shape::of(layout);
        let differ = |what: &str, mine: &[String], theirs: &[String]| {
            ScanError::HeaderMismatch(format!(
                "{} has {what} {theirs:?}, but {} has {mine:?}: every object of a scan has the \
                 same {what}",
                layout.object.url(),
                self.key,
            ))
        };
        if !layout.joined.union_by_name && other.columns != self.columns {
            return Err(differ("columns", &self.columns, &other.columns));
        }
        if other.partition_keys != self.partition_keys {
            return Err(differ(
                "partition keys",
                &self.partition_keys,
                &other.partition_keys,
            ));
        }
        Ok(())
    }
}

/// The objects of `versions` ([`list`]) planned in key order, a few at once: their hive
/// partitions taken from their keys, those the query rules out by them pruned unread. Every
/// object must have the columns and partition keys of the first (CSV: its header row; Parquet:
/// its schema's names; any columns when they are bound by name): one that does not fails with
/// HeaderMismatch naming both. Their chunks run in this process: a small text object is read
/// whole as it is planned ([`plan_object_to_run`]).
pub fn plan_each<S>(
    s3: &Client,
    versions: S,
    planning: &Planning,
) -> impl Stream<Item = Result<Layout, ScanError>> + Send + use<S>
where
    S: Stream<Item = Result<ObjectVersion, ScanError>> + Send + 'static,
{
    let (s3, planning) = (s3.clone(), planning.clone());
    let (hive, prune, pruned) = (
        planning.hive,
        planning.prune.clone(),
        planning.pruned.clone(),
    );
    let union_by_name = planning.union_by_name;
    let changes = planning.changes.clone();
    versions
        .map_ok(move |version| {
            let partitions = match hive {
                HivePartitioning::Disabled => Vec::new(),
                _ => hive::partitions(&version.key),
            };
            (version, partitions)
        })
        .try_filter(move |(_, partitions)| {
            let kept = prune
                .as_ref()
                .is_none_or(|query| hive::may_match(query, partitions));
            if !kept {
                pruned.fetch_add(1, Ordering::Relaxed);
            }
            futures::future::ready(kept)
        })
        .map(move |version| {
            let (s3, request) = (s3.clone(), planning.request.clone());
            let changes = changes.clone();
            async move {
                let (version, partitions) = version?;
                let key = version.key.clone();
                match plan_object_to_run(&s3, &request, version).await {
                    Ok(mut layout) => {
                        layout.joined = JoinedColumns {
                            partitions,
                            union_by_name,
                        };
                        Ok(Some(layout))
                    }
                    // Changed since it was listed: skipped, or the scan fails.
                    Err(error) => changes.skip(&key, error).map(|()| None),
                }
            }
        })
        .buffered(PLANNING_CONCURRENCY)
        .filter_map(|layout| futures::future::ready(layout.transpose()))
        .scan(None::<Shape>, move |first, layout| {
            let checked = layout.and_then(|layout| {
                if hive == HivePartitioning::Enabled && layout.joined.partitions.is_empty() {
                    return Err(ScanError::InvalidScan(format!(
                        "{} has no hive partitions (key=value folders), and hive partitioning \
                         is enabled",
                        layout.object.url()
                    )));
                }
                match first {
                    None => *first = Some(Shape::of(&layout)),
                    Some(shape) => shape.check(&layout)?,
                }
                Ok(layout)
            });
            futures::future::ready(Some(checked))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small object is read by the one GET that plans it: its chunk reads it from memory.
    #[tokio::test]
    async fn a_small_object_is_read_once() {
        use crate::scan::chunk::{ChunkTask, Work, run_chunk};
        use synthetic::{BODY, SyntheticStore, key};
        const OBJECTS: u64 = 20;
        let store = SyntheticStore::start(OBJECTS).await;
        let s3 = store.client();
        let planning = Planning {
            request: PlanRequest {
                bucket: "b".into(),
                key: String::new(),
                format: crate::scan::InputFormat::JsonLines,
                expected_headers: None,
                chunk_size: 1 << 20,
                max_record_size: crate::scan::plan::DEFAULT_MAX_RECORD_SIZE,
            },
            hive: HivePartitioning::Disabled,
            prune: None,
            pruned: Arc::default(),
            union_by_name: false,
            changes: ObjectChanges::default(),
        };
        let versions = (0..OBJECTS)
            .map(|n| ObjectVersion::pinned("b", &key(n), BODY.len() as u64, Some("\"e\"".into())));
        let layouts: Vec<Layout> = plan_each(&s3, futures::stream::iter(versions), &planning)
            .try_collect()
            .await
            .unwrap();
        let mut records = 0;
        for layout in layouts {
            let task = ChunkTask {
                layout,
                index: 0,
                start_state: None,
                work: Work::Query {
                    sql: "SELECT COUNT(*) FROM S3Object".into(),
                    output: None,
                },
                run: "test".into(),
                keep_rows: None,
            };
            let stop = crate::shutdown::Stop::never();
            records += run_chunk(&s3, &task, Arc::default(), stop)
                .await
                .unwrap()
                .records;
        }
        assert_eq!(records, OBJECTS);
        assert_eq!(store.gets.load(Ordering::Relaxed), OBJECTS);
    }

    fn version(key: &str) -> ObjectVersion {
        ObjectVersion::pinned("b", key, 1, Some("\"e\"".into())).unwrap()
    }

    fn selection(max_objects: u64, allow_empty: bool) -> Selection {
        Selection {
            bucket: "b".into(),
            source: ObjectSource::Glob(Glob::new("*.csv").unwrap()),
            max_objects,
            allow_empty,
            changes: ObjectChanges::default(),
            folders: None,
        }
    }

    async fn through(keys: &[&str], selection: &Selection) -> Vec<Result<String, &'static str>> {
        let versions: Vec<_> = keys.iter().map(|k| Ok(version(k))).collect();
        bounded(futures::stream::iter(versions), selection)
            .map(|v| v.map(|v| v.key).map_err(|e| e.reason()))
            .collect()
            .await
    }

    #[tokio::test]
    async fn the_bounds_fail_the_listing_when_passed() {
        let ok = |k: &str| Ok(k.to_string());
        assert_eq!(
            through(&["a", "b"], &selection(2, false)).await,
            [ok("a"), ok("b")]
        );
        assert_eq!(
            through(&["a", "b", "c"], &selection(2, false)).await,
            [ok("a"), ok("b"), Err("TooManyObjects")]
        );
        assert_eq!(through(&[], &selection(2, false)).await, [Err("NoObjects")]);
        assert_eq!(through(&[], &selection(2, true)).await, []);
    }

    #[test]
    fn key_lists_are_sorted_bounded_and_name_objects() {
        let ObjectSource::Keys(keys) =
            ObjectSource::keys(vec!["b".into(), "a".into(), "b".into()]).unwrap()
        else {
            panic!("a key list");
        };
        assert_eq!(keys, ["a", "b"]);
        let many = (0..=MAX_KEYS).map(|i| i.to_string()).collect();
        assert_eq!(
            ObjectSource::keys(many).unwrap_err().reason(),
            "InvalidScan"
        );
        for bad in ["", "dir/"] {
            assert!(ObjectSource::keys(vec![bad.into()]).is_err(), "{bad:?}");
        }
    }
}
