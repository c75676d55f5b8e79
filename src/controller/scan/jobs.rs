//! The Jobs of a scan, built on k8s-openapi types: chunk Jobs (`s3flow worker`), container
//! processing Jobs (fetch, then the user's container) and the onComplete Job. Every pod passes the
//! `restricted` Pod Security Standard and carries no Kubernetes API token; what a chunk needs is in
//! its environment.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, ProjectedVolumeSource, SeccompProfile, SecretKeySelector,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::api::S3Connection;
use crate::api::scan::{ContainerSpec, S3ParallelScan};
use crate::scan::plan::compact_ranges;
use crate::scan::{ChunkTask, InputFormat, State};
use crate::worker::{
    CONTAINER_FETCH, CONTAINER_PROCESSOR, CONTAINER_WORKER, CREDENTIAL_KEYS, ENV_ADDRESS_POLICY,
    ENV_BUCKET, ENV_CHUNK_FILE, ENV_CHUNK_INDEX, ENV_CHUNK_RANGE, ENV_CHUNK_ROW_GROUPS, ENV_KEY,
    ENV_MANIFEST, ENV_REPORT_TO, ENV_ROLE_ARN, ENV_ROLE_SESSION_NAME, ENV_S3_ENDPOINT,
    ENV_S3_FORCE_PATH_STYLE, ENV_S3_REGION, ENV_STS_DURATION_SECONDS, ENV_STS_ENDPOINT,
    ENV_STS_REGION, ENV_TASK, ENV_TERMINATION_MESSAGE_PATH, ENV_WEB_IDENTITY_TOKEN_FILE,
    IDENTITY_DIR, IDENTITY_TOKEN, IDENTITY_TOKEN_SECONDS, IDENTITY_VOLUME, LABEL_CHUNK, LABEL_ROLE,
    LABEL_SCAN, LABEL_START_STATE, PERMANENT_FAILURE_EXIT_CODE, WorkerIdentity,
};

/// Where a fetch writes a chunk's records for a user container.
const CHUNK_DIR: &str = "/s3flow/chunk";
/// The user that runs every container of a scan (the s3flow image's own).
const RUN_AS: i64 = 65532;

/// Jobs of a scan by purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads a chunk and reports its records (and runs the SQL).
    Scan,
    /// Runs the user's container on a chunk's records.
    Process,
    /// The completion callback.
    OnComplete,
    /// A chunk whose rows cross the LIMIT, run again keeping only the rows within it.
    Cut,
}

impl Role {
    /// Value of the [`LABEL_ROLE`] label on this role's Jobs.
    pub fn label(self) -> &'static str {
        match self {
            Role::Scan => "scan",
            Role::Process => "process",
            Role::OnComplete => "on-complete",
            Role::Cut => "cut",
        }
    }

    /// The role a [`LABEL_ROLE`] value names; `None` for a value that is not one of ours.
    pub fn from_label(label: &str) -> Option<Role> {
        [Role::Scan, Role::Process, Role::OnComplete, Role::Cut]
            .into_iter()
            .find(|role| role.label() == label)
    }

    /// The container whose termination message says what the Job did.
    pub fn reporting_container(self) -> &'static str {
        match self {
            Role::Scan | Role::Cut => CONTAINER_WORKER,
            Role::Process | Role::OnComplete => CONTAINER_PROCESSOR,
        }
    }
}

/// Name prefix of a scan's Jobs: the scan's name (cut) and its uid, so a re-created scan of the
/// same name never meets the old one's Jobs.
pub fn job_prefix(scan: &S3ParallelScan) -> String {
    let name: String = scan.name_any().chars().take(40).collect();
    let uid: String = scan.uid().unwrap_or_default().chars().take(5).collect();
    format!("{}-{uid}", name.trim_end_matches(['-', '.']))
}

/// The deterministic name of a scan's Job.
pub fn job_name(scan: &S3ParallelScan, role: Role, index: u32, state: Option<State>) -> String {
    let prefix = job_prefix(scan);
    match (role, state) {
        (Role::Scan, None) => format!("{prefix}-c{index}"),
        (Role::Scan, Some(state)) => {
            format!("{prefix}-c{index}-{}", state.code().to_ascii_lowercase())
        }
        (Role::Process, _) => format!("{prefix}-p{index}"),
        (Role::OnComplete, _) => format!("{prefix}-done"),
        (Role::Cut, _) => format!("{prefix}-c{index}-cut"),
    }
}

/// The file a fetch writes a chunk's records to.
pub fn chunk_file(format: InputFormat) -> String {
    let extension = match format {
        InputFormat::Csv { .. } => "csv",
        InputFormat::JsonLines => "jsonl",
        InputFormat::Parquet => "parquet",
    };
    format!("{CHUNK_DIR}/records.{extension}")
}

/// What every Job of one scan shares.
pub struct JobTemplate<'a> {
    /// The scan that owns the Jobs, names them and sets their worker and processor.
    pub scan: &'a S3ParallelScan,
    /// The scanned object's store.
    pub connection: &'a S3Connection,
    /// Image of the worker containers when the scan names none.
    pub default_image: &'a str,
    /// The operator's address policy, for the workers' connections.
    pub policy: String,
    /// The ServiceAccount the pods act as, when the connection names one.
    pub identity: Option<&'a WorkerIdentity>,
}

/// Which Job to build.
pub enum JobKind<'a> {
    /// A chunk read by `s3flow worker`, reporting to `report_to` too.
    Scan {
        /// The chunk to read.
        task: &'a ChunkTask,
        /// `s3://` URL where the worker also stores its full report (read when the termination
        /// message does not hold it).
        report_to: String,
    },
    /// A chunk's records fetched to a file, then the user's container.
    Process {
        /// The chunk whose records are fetched.
        task: &'a ChunkTask,
        /// The user's processor container.
        container: &'a ContainerSpec,
    },
    /// The completion callback, told where the manifest is.
    OnComplete {
        /// The user's onComplete container.
        container: &'a ContainerSpec,
        /// `s3://` URL of the scan's manifest, given to the container as `S3FLOW_MANIFEST`.
        manifest: String,
    },
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// Drops every capability, forbids privilege escalation; the s3flow containers also get a
/// read-only root filesystem.
fn restricted(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        read_only_root_filesystem: read_only_root.then_some(true),
        ..Default::default()
    }
}

impl JobTemplate<'_> {
    /// Where the object's store is and how to sign for it, for any container that reads it.
    fn store_env(&self) -> Vec<EnvVar> {
        let connection = self.connection;
        let mut vars = Vec::new();
        if let Some(endpoint) = &connection.endpoint {
            vars.push(env(ENV_S3_ENDPOINT, endpoint));
        }
        if let Some(region) = &connection.region {
            vars.push(env(ENV_S3_REGION, region));
        }
        if connection.force_path_style == Some(true) {
            vars.push(env(ENV_S3_FORCE_PATH_STYLE, "true"));
        }
        if let Some(secret) = &connection.credentials_secret_ref {
            for (key, optional) in CREDENTIAL_KEYS {
                vars.push(EnvVar {
                    name: key.into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: secret.name.clone(),
                            key: key.into(),
                            optional: Some(optional),
                        }),
                        ..Default::default()
                    }),
                });
            }
        }
        vars
    }

    /// How an s3flow worker exchanges the pod's projected token: `S3FLOW_*`, which an EKS
    /// webhook's own `AWS_*` variables cannot change.
    fn worker_identity_env(&self) -> Vec<EnvVar> {
        let Some(identity) = self.identity else {
            return vec![];
        };
        let mut vars = vec![
            env(ENV_WEB_IDENTITY_TOKEN_FILE, token_path()),
            env(ENV_ROLE_SESSION_NAME, &identity.session_name),
            env(ENV_STS_REGION, &identity.region),
            env(
                ENV_STS_DURATION_SECONDS,
                identity.duration_seconds.to_string(),
            ),
        ];
        if let Some(role) = &identity.role_arn {
            vars.push(env(ENV_ROLE_ARN, role));
        }
        if let Some(endpoint) = &identity.sts_endpoint {
            vars.push(env(ENV_STS_ENDPOINT, endpoint));
        }
        vars
    }

    /// The standard web identity variables of the AWS SDKs, for a user's container.
    fn user_identity_env(&self) -> Vec<EnvVar> {
        let Some(identity) = self.identity else {
            return vec![];
        };
        let mut vars = vec![
            env("AWS_WEB_IDENTITY_TOKEN_FILE", token_path()),
            env("AWS_ROLE_SESSION_NAME", &identity.session_name),
        ];
        if let Some(role) = &identity.role_arn {
            vars.push(env("AWS_ROLE_ARN", role));
        }
        if let Some(endpoint) = &identity.sts_endpoint {
            vars.push(env("AWS_ENDPOINT_URL_STS", endpoint));
        }
        vars
    }

    /// The projected token's mount, in every container when the pods act as a ServiceAccount.
    fn identity_mounts(&self) -> Vec<VolumeMount> {
        self.identity
            .map(|_| VolumeMount {
                name: IDENTITY_VOLUME.into(),
                mount_path: IDENTITY_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            })
            .into_iter()
            .collect()
    }

    /// An `s3flow worker` container running `task` (`fetch` writes its records to a file).
    fn worker(&self, name: &str, args: &[&str], task: &ChunkTask, extra: Vec<EnvVar>) -> Container {
        let worker = self.scan.spec.worker.clone().unwrap_or_default();
        let mut vars = vec![
            env(ENV_TERMINATION_MESSAGE_PATH, "/dev/termination-log"),
            env(ENV_ADDRESS_POLICY, self.policy.clone()),
            env(ENV_TASK, serde_json::to_string(task).unwrap_or_default()),
        ];
        vars.extend(self.store_env());
        vars.extend(self.worker_identity_env());
        vars.extend(extra);
        let mounts = self.identity_mounts();
        Container {
            name: name.into(),
            image: Some(
                worker
                    .image
                    .unwrap_or_else(|| self.default_image.to_string()),
            ),
            command: Some(vec!["s3flow".into()]),
            args: Some(args.iter().map(|a| a.to_string()).collect()),
            env: Some(vars),
            resources: worker.resources,
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            security_context: Some(restricted(true)),
            volume_mounts: (!mounts.is_empty()).then_some(mounts),
            ..Default::default()
        }
    }

    /// The user's container, with the scan's environment and its own.
    fn user(spec: &ContainerSpec, mut vars: Vec<EnvVar>, mounts: Vec<VolumeMount>) -> Container {
        vars.extend(spec.env.iter().cloned());
        Container {
            name: CONTAINER_PROCESSOR.into(),
            image: Some(spec.image.clone()),
            command: (!spec.command.is_empty()).then(|| spec.command.clone()),
            args: (!spec.args.is_empty()).then(|| spec.args.clone()),
            env: Some(vars),
            resources: spec.resources.clone(),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            security_context: Some(restricted(false)),
            volume_mounts: (!mounts.is_empty()).then_some(mounts),
            ..Default::default()
        }
    }

    /// What runs in the pod of a Job of `kind`.
    fn content(&self, kind: JobKind) -> PodContent {
        match kind {
            JobKind::Scan { task, report_to } => {
                let extra = vec![env(ENV_REPORT_TO, report_to)];
                let worker = self.worker(CONTAINER_WORKER, &[CONTAINER_WORKER], task, extra);
                PodContent {
                    role: match task.keep_rows {
                        Some(_) => Role::Cut,
                        None => Role::Scan,
                    },
                    index: task.index,
                    state: task.start_state,
                    init: vec![],
                    containers: vec![worker],
                    volumes: vec![],
                }
            }
            JobKind::Process { task, container } => self.process(task, container),
            JobKind::OnComplete {
                container,
                manifest,
            } => {
                let mut vars = self.store_env();
                vars.extend(self.user_identity_env());
                vars.push(env(ENV_MANIFEST, manifest));
                PodContent {
                    role: Role::OnComplete,
                    index: 0,
                    state: None,
                    init: vec![],
                    containers: vec![Self::user(container, vars, self.identity_mounts())],
                    volumes: vec![],
                }
            }
        }
    }

    /// A chunk's processing: the worker fetches the chunk into a shared volume, then the user's
    /// container reads it.
    fn process(&self, task: &ChunkTask, container: &ContainerSpec) -> PodContent {
        let chunk_mount = || VolumeMount {
            name: "chunk".into(),
            mount_path: CHUNK_DIR.into(),
            ..Default::default()
        };
        let mut fetch = self.worker(CONTAINER_FETCH, &[CONTAINER_WORKER, "fetch"], task, vec![]);
        fetch
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(chunk_mount());
        let layout = &task.layout;
        let (start, end) = layout.range(task.index);
        let mut vars = vec![
            env(ENV_CHUNK_FILE, chunk_file(layout.format)),
            env(ENV_CHUNK_INDEX, task.index.to_string()),
            env(
                ENV_CHUNK_RANGE,
                format!("{start}-{}", end.min(layout.object.size)),
            ),
            env(ENV_BUCKET, layout.object.bucket.clone()),
            env(ENV_KEY, layout.object.key.clone()),
        ];
        vars.extend(self.user_identity_env());
        // A Parquet chunk is whole row groups: its file holds them, as row groups of its own.
        if let Some(groups) = layout
            .parquet
            .as_ref()
            .and_then(|p| p.row_groups(task.index))
        {
            vars.push(env(ENV_CHUNK_ROW_GROUPS, compact_ranges(groups)));
        }
        PodContent {
            role: Role::Process,
            index: task.index,
            state: None,
            init: vec![fetch],
            containers: vec![Self::user(container, vars, {
                let mut mounts = vec![chunk_mount()];
                mounts.extend(self.identity_mounts());
                mounts
            })],
            volumes: vec![Volume {
                name: "chunk".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            }],
        }
    }

    /// The Job of `kind`, named deterministically and owned by the scan.
    pub fn build(&self, kind: JobKind) -> Job {
        let content = self.content(kind);
        let scan = self.scan;
        let (role, index, state) = (content.role, content.index, content.state);
        let mut labels = BTreeMap::from([
            (LABEL_SCAN.to_string(), scan.uid().unwrap_or_default()),
            (LABEL_ROLE.to_string(), role.label().to_string()),
            (LABEL_CHUNK.to_string(), index.to_string()),
        ]);
        if let Some(state) = state {
            labels.insert(LABEL_START_STATE.into(), state.code().to_string());
        }
        Job {
            metadata: ObjectMeta {
                name: Some(job_name(scan, role, index, state)),
                namespace: scan.namespace(),
                labels: Some(labels.clone()),
                owner_references: Some(vec![owner(scan)]),
                ..Default::default()
            },
            spec: Some(JobSpec {
                backoff_limit: Some(match role {
                    Role::OnComplete => 0,
                    _ => scan.spec.chunking.max_retries_per_chunk,
                }),
                pod_failure_policy: Some(failure_policy(role)),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    spec: Some(self.pod_spec(content)),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    /// A pod that runs `content` once, as a non-root user with no API access, placed as the
    /// scan's worker settings say.
    fn pod_spec(&self, content: PodContent) -> PodSpec {
        let worker = self.scan.spec.worker.clone().unwrap_or_default();
        let PodContent {
            init,
            containers,
            mut volumes,
            ..
        } = content;
        // The kubelet projects the ServiceAccount's token for the STS's audience and renews it;
        // the pod gets no API token.
        if let Some(identity) = self.identity {
            volumes.push(Volume {
                name: IDENTITY_VOLUME.into(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            audience: Some(identity.audience.clone()),
                            expiration_seconds: Some(IDENTITY_TOKEN_SECONDS),
                            path: IDENTITY_TOKEN.into(),
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let service_account = worker
            .service_account_name
            .or_else(|| self.identity.map(|i| i.service_account.clone()));
        PodSpec {
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            service_account_name: service_account,
            node_selector: (!worker.node_selector.is_empty()).then_some(worker.node_selector),
            tolerations: (!worker.tolerations.is_empty()).then_some(worker.tolerations),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            init_containers: (!init.is_empty()).then_some(init),
            containers,
            volumes: (!volumes.is_empty()).then_some(volumes),
            ..Default::default()
        }
    }
}

/// The projected token's path in a container.
fn token_path() -> String {
    format!("{IDENTITY_DIR}/{IDENTITY_TOKEN}")
}

/// What runs in a Job's pod, and which chunk Job it is.
struct PodContent {
    role: Role,
    index: u32,
    /// The start state of a re-run from the true state.
    state: Option<State>,
    init: Vec<Container>,
    containers: Vec<Container>,
    volumes: Vec<Volume>,
}

/// The scan as the controlling owner: the Job goes with it.
fn owner(scan: &S3ParallelScan) -> OwnerReference {
    OwnerReference {
        api_version: S3ParallelScan::api_version(&()).into_owned(),
        kind: S3ParallelScan::kind(&()).into_owned(),
        name: scan.name_any(),
        uid: scan.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A drained node or a preempted pod is not the chunk's fault; a worker's permanent failure
/// (exit code 3 of the worker, or of the fetch before a user container) fails the chunk at once.
fn failure_policy(role: Role) -> PodFailurePolicy {
    let mut rules = vec![PodFailurePolicyRule {
        action: "Ignore".into(),
        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
        }]),
        on_exit_codes: None,
    }];
    let fail_fast = match role {
        Role::Scan | Role::Cut => Some(CONTAINER_WORKER),
        Role::Process => Some(CONTAINER_FETCH),
        Role::OnComplete => None,
    };
    if let Some(container) = fail_fast {
        rules.push(PodFailurePolicyRule {
            action: "FailJob".into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: Some(container.into()),
                operator: "In".into(),
                values: vec![PERMANENT_FAILURE_EXIT_CODE],
            }),
            on_pod_conditions: None,
        });
    }
    PodFailurePolicy { rules }
}

/// Whether `image` matches one of `patterns` (`*` matches any run of characters); no patterns:
/// any image.
pub fn image_allowed(image: &str, patterns: &[String]) -> bool {
    patterns.is_empty() || patterns.iter().any(|pattern| glob(pattern, image))
}

fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The first image of `scan` that `patterns` do not allow (the operator's own worker image,
/// `default_image`, always is).
pub fn disallowed_image(
    scan: &S3ParallelScan,
    patterns: &[String],
    default_image: &str,
) -> Option<String> {
    let spec = &scan.spec;
    spec.worker
        .as_ref()
        .and_then(|w| w.image.clone())
        .into_iter()
        .chain(spec.processor.container.as_ref().map(|c| c.image.clone()))
        .chain(spec.on_complete.as_ref().map(|c| c.image.clone()))
        .find(|image| image != default_image && !image_allowed(image, patterns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{Layout, Work};
    use serde_json::json;

    fn scan(spec: serde_json::Value) -> S3ParallelScan {
        let mut value = json!({
            "source": {"bucket": "b", "key": "k", "endpoint": "http://minio:9000",
                "credentialsSecretRef": {"name": "creds"}},
            "format": {"csv": {}},
            "processor": {"sql": "SELECT COUNT(*) FROM S3Object"},
        });
        crate::controller::tests_support::merge(&mut value, spec);
        let mut scan = S3ParallelScan::new(&"a".repeat(80), serde_json::from_value(value).unwrap());
        scan.metadata.uid = Some("0123456789".into());
        scan.metadata.namespace = Some("team-a".into());
        scan
    }

    fn task(index: u32, state: Option<State>) -> ChunkTask {
        ChunkTask {
            layout: Layout {
                object: crate::scan::ObjectVersion {
                    bucket: "b".into(),
                    key: "k".into(),
                    size: 100,
                    etag: "\"e\"".into(),
                    modified: None,
                },
                format: InputFormat::Csv {
                    delimiter: b',',
                    quote: b'"',
                    header: true,
                },
                columns: vec!["a".into()],
                data_start: 2,
                chunk_size: 10,
                compression: crate::scan::Compression::None,
                max_record_size: 1 << 20,
                parquet: None,
                joined: Default::default(),
                plan: None,
                prefetched: Default::default(),
            },
            index,
            start_state: state,
            work: Work::Query {
                sql: "SELECT COUNT(*) FROM S3Object".into(),
                output: None,
            },
            run: "0123456789".into(),
            keep_rows: None,
        }
    }

    #[test]
    fn job_names_are_deterministic_and_short() {
        let obj = scan(json!({}));
        let name = job_name(&obj, Role::Scan, 99_999, Some(State::InQuoted));
        assert_eq!(name, format!("{}-01234-c99999-q", "a".repeat(40)));
        assert!(name.len() <= 63);
        assert_eq!(
            job_name(&obj, Role::Scan, 7, None),
            format!("{}-01234-c7", "a".repeat(40))
        );
        assert_eq!(
            job_name(&obj, Role::Process, 7, None),
            format!("{}-01234-p7", "a".repeat(40))
        );
        assert_eq!(
            job_name(&obj, Role::OnComplete, 0, None),
            format!("{}-01234-done", "a".repeat(40))
        );
    }

    /// The `restricted` Pod Security Standard, as its rules read.
    fn assert_restricted(job: &Job) {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let context = pod.security_context.as_ref().unwrap();
        assert_eq!(context.run_as_non_root, Some(true));
        assert_eq!(
            context.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        for container in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            let security = container.security_context.as_ref().unwrap();
            assert_eq!(security.allow_privilege_escalation, Some(false));
            assert_eq!(
                security.capabilities.as_ref().unwrap().drop,
                Some(vec!["ALL".to_string()])
            );
            assert_eq!(security.privileged, None);
            if container
                .image
                .as_deref()
                .is_some_and(|i| i.ends_with("/s3flow:1"))
            {
                assert_eq!(security.read_only_root_filesystem, Some(true));
            }
        }
    }

    /// A container's plain environment values by name.
    fn env_values(container: &Container) -> BTreeMap<String, String> {
        container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn pods_acting_as_a_service_account_exchange_its_projected_token() {
        let mut obj = scan(json!({}));
        let connection = &mut obj.spec.source.connection;
        connection.credentials_secret_ref = None;
        connection.service_account_name = Some("writer".into());
        let identity = WorkerIdentity {
            service_account: "writer".into(),
            audience: "sts.min.io".into(),
            role_arn: Some("arn:minio:iam:us-east-1::role/x".into()),
            sts_endpoint: Some("http://sts.example:9000".into()),
            region: "us-east-1".into(),
            session_name: "s3flow.a.writer".into(),
            duration_seconds: 900,
        };
        let template = JobTemplate {
            scan: &obj,
            connection: &obj.spec.source.connection,
            default_image: "registry.example/s3flow:1",
            policy: String::new(),
            identity: Some(&identity),
        };
        let task = task(0, None);
        let job = template.build(JobKind::Scan {
            task: &task,
            report_to: "s3://b/r".into(),
        });
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("writer"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let volume = &pod.volumes.as_ref().unwrap()[0];
        let projection = volume.projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
            .service_account_token
            .clone()
            .unwrap();
        assert_eq!(projection.audience.as_deref(), Some("sts.min.io"));
        assert_eq!(projection.expiration_seconds, Some(IDENTITY_TOKEN_SECONDS));
        let worker = &pod.containers[0];
        let vars = env_values(worker);
        assert_eq!(
            vars[ENV_WEB_IDENTITY_TOKEN_FILE],
            "/var/run/secrets/s3flow.io/identity/token"
        );
        assert_eq!(vars[ENV_ROLE_ARN], "arn:minio:iam:us-east-1::role/x");
        assert_eq!(vars[ENV_STS_ENDPOINT], "http://sts.example:9000");
        assert_eq!(vars[ENV_STS_DURATION_SECONDS], "900");
        assert!(vars.keys().all(|k| !k.starts_with("AWS_")), "{vars:?}");
        let mount = &worker.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(mount.mount_path, IDENTITY_DIR);
        assert_eq!(mount.read_only, Some(true));

        // The user's containers get the AWS SDKs' own web identity variables and the same token.
        let container: ContainerSpec =
            serde_json::from_value(json!({"image": "python:3"})).unwrap();
        let on_complete = template.build(JobKind::OnComplete {
            container: &container,
            manifest: "s3://b/m".into(),
        });
        let pod = on_complete.spec.unwrap().template.spec.unwrap();
        let user = &pod.containers[0];
        let vars = env_values(user);
        assert_eq!(
            vars["AWS_WEB_IDENTITY_TOKEN_FILE"],
            "/var/run/secrets/s3flow.io/identity/token"
        );
        assert_eq!(vars["AWS_ROLE_ARN"], "arn:minio:iam:us-east-1::role/x");
        assert_eq!(vars["AWS_ENDPOINT_URL_STS"], "http://sts.example:9000");
        assert!(!vars.contains_key("AWS_SECRET_ACCESS_KEY"));
        assert_eq!(pod.service_account_name.as_deref(), Some("writer"));
        assert_eq!(
            user.volume_mounts.as_ref().unwrap()[0].name,
            IDENTITY_VOLUME
        );
    }

    #[test]
    fn chunk_jobs_carry_the_task_the_policy_and_no_token() {
        let obj = scan(json!({"chunking": {"maxRetriesPerChunk": 5}}));
        let template = JobTemplate {
            scan: &obj,
            connection: &obj.spec.source.connection,
            default_image: "registry.example/s3flow:1",
            policy: "allow=127.0.0.1/32;deny=;own=".into(),
            identity: None,
        };
        let task = task(3, Some(State::InQuoted));
        let job = template.build(JobKind::Scan {
            task: &task,
            report_to: "s3://b/r".into(),
        });
        assert_restricted(&job);
        assert_eq!(
            job.metadata.name.as_deref(),
            Some(format!("{}-01234-c3-q", "a".repeat(40)).as_str())
        );
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_SCAN], "0123456789");
        assert_eq!(labels[LABEL_CHUNK], "3");
        assert_eq!(labels[LABEL_START_STATE], "Q");
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            ("0123456789", Some(true))
        );
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(5));
        let rules = &spec.pod_failure_policy.as_ref().unwrap().rules;
        let codes = rules[1].on_exit_codes.as_ref().unwrap();
        assert_eq!(codes.container_name.as_deref(), Some(CONTAINER_WORKER));
        assert_eq!(codes.values, vec![PERMANENT_FAILURE_EXIT_CODE]);
        let container = &spec.template.spec.as_ref().unwrap().containers[0];
        let vars: BTreeMap<&str, Option<&str>> = container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(vars[ENV_S3_ENDPOINT], Some("http://minio:9000"));
        assert_eq!(
            vars[ENV_ADDRESS_POLICY],
            Some("allow=127.0.0.1/32;deny=;own=")
        );
        assert_eq!(vars[ENV_REPORT_TO], Some("s3://b/r"));
        let carried: ChunkTask = serde_json::from_str(vars[ENV_TASK].unwrap()).unwrap();
        assert_eq!(carried, task);
        // Credentials come from the Secret by reference, never as values.
        assert_eq!(vars["AWS_SECRET_ACCESS_KEY"], None);
        assert_eq!(
            container.image.as_deref(),
            Some("registry.example/s3flow:1")
        );
    }

    #[test]
    fn process_jobs_fetch_then_run_the_users_container() {
        let obj = scan(json!({
            "processor": {"sql": null, "container": {"image": "python:3", "command": ["python3"],
                "env": [{"name": "MINE", "value": "1"}]}},
        }));
        let template = JobTemplate {
            scan: &obj,
            connection: &obj.spec.source.connection,
            default_image: "registry.example/s3flow:1",
            policy: String::new(),
            identity: None,
        };
        let task = task(4, Some(State::RecordEnd));
        let container = obj.spec.processor.container.as_ref().unwrap();
        let job = template.build(JobKind::Process {
            task: &task,
            container,
        });
        assert_restricted(&job);
        let pod = job.spec.as_ref().unwrap().template.spec.clone().unwrap();
        let fetch = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(fetch.name, CONTAINER_FETCH);
        assert_eq!(
            fetch.args,
            Some(vec!["worker".to_string(), "fetch".to_string()])
        );
        let user = &pod.containers[0];
        assert_eq!(user.image.as_deref(), Some("python:3"));
        let names: Vec<&str> = user.env.iter().flatten().map(|e| e.name.as_str()).collect();
        for name in [
            ENV_CHUNK_FILE,
            ENV_CHUNK_INDEX,
            ENV_CHUNK_RANGE,
            ENV_BUCKET,
            ENV_KEY,
            "MINE",
        ] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        assert!(!names.contains(&ENV_TASK));
        assert_eq!(
            user.volume_mounts.as_ref().unwrap()[0].mount_path,
            CHUNK_DIR
        );
    }

    #[test]
    fn image_patterns() {
        let patterns = vec!["registry.example/*".to_string(), "*/s3flow:*".to_string()];
        for (image, allowed) in [
            ("registry.example/team/tool:1", true),
            ("ghcr.io/s3flow/s3flow:0.1.0", true),
            ("docker.io/library/python:3", false),
            ("registry.example.evil/x", false),
            ("s3flow", false),
        ] {
            assert_eq!(image_allowed(image, &patterns), allowed, "{image}");
        }
        assert!(image_allowed("anything", &[]));
        assert!(glob("a*b*c", "aXbYc") && !glob("a*b*c", "aXbY") && glob("*", ""));
        let obj = scan(json!({
            "worker": {"image": "registry.example/s3flow:2"},
            "onComplete": {"image": "busybox", "command": ["true"]},
        }));
        assert_eq!(
            disallowed_image(&obj, &patterns, "own/s3flow:1").as_deref(),
            Some("busybox")
        );
        assert_eq!(disallowed_image(&obj, &[], "own/s3flow:1"), None);
        // The operator's own worker image is allowed whatever the patterns say.
        let own = scan(json!({"worker": {"image": "own/s3flow:1"}}));
        let strict = vec!["registry.example/*".to_string()];
        assert_eq!(disallowed_image(&own, &strict, "own/s3flow:1"), None);
    }
}
