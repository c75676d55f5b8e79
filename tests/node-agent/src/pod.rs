//! One pod's life on this node: prepare its inputs, run init containers in order, then its
//! containers, report status like a kubelet, and honour deletion (SIGTERM, grace, SIGKILL).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::inputs::{NamespaceObjects, container_env, materialize_volumes};
use crate::process::{Bind, argv, signal_group, spawn};

/// What the agent knows about its node.
pub struct Node {
    pub client: Client,
    pub name: String,
    pub s3flow_binary: PathBuf,
    pub state_dir: PathBuf,
    pub apiserver_port: u16,
}

/// Where the node reaches itself: loopback only.
pub const HOST_IP: &str = "127.0.0.1";

/// Each pod's own loopback address (127.1.0.0/16 and up, never the host's): pods share the
/// host's network, and distinct addresses let two replicas listen on the same port, as in a cluster.
pub fn pod_ip(uid: &str) -> String {
    // FNV-1a: stable across restarts of the agent, so a pod keeps its address.
    let hash = uid.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let [a, b, c, _] = hash.to_be_bytes();
    format!("127.{}.{b}.{}", 1 + a % 254, 1 + c % 254)
}
const MAX_TERMINATION_MESSAGE: usize = 4096;

/// Signals a running pod to stop: `Some(grace seconds)` once its deletion is requested.
pub type StopSignal = watch::Receiver<Option<i64>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Restart {
    Never,
    OnFailure,
    Always,
}

impl Restart {
    fn of(pod: &Pod) -> Self {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => Self::Never,
            Some("OnFailure") => Self::OnFailure,
            _ => Self::Always,
        }
    }
}

/// A container's state in the pod status: `waiting`, `running` or `terminated`, as the API shapes it.
#[derive(Clone)]
struct ContainerStatus {
    name: String,
    image: String,
    restart_count: i32,
    state: Value,
    last_state: Value,
    exit_code: Option<i32>,
    readiness: Option<ReadinessProbe>,
    /// The readiness probe's last answer (reset when the container's state changes).
    probe_passed: bool,
}

impl ContainerStatus {
    fn new(c: &Container, reason: &str) -> Self {
        Self {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            restart_count: 0,
            state: json!({"waiting": {"reason": reason}}),
            last_state: json!({}),
            exit_code: None,
            readiness: ReadinessProbe::of(c),
            probe_passed: false,
        }
    }

    fn running(&self) -> bool {
        self.state.get("running").is_some()
    }

    fn ready(&self) -> bool {
        self.running() && (self.readiness.is_none() || self.probe_passed)
    }
}

/// A container's HTTP readiness probe, run against the pod's address as the kubelet does.
#[derive(Clone, Debug)]
struct ReadinessProbe {
    port: u16,
    path: String,
}

impl ReadinessProbe {
    fn of(c: &Container) -> Option<Self> {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let get = c.readiness_probe.as_ref()?.http_get.as_ref()?;
        let port = match &get.port {
            IntOrString::Int(port) => *port,
            IntOrString::String(name) => {
                c.ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name))?
                    .container_port
            }
        };
        Some(Self {
            port: u16::try_from(port).ok()?,
            path: get.path.clone().unwrap_or_else(|| "/".into()),
        })
    }

    /// A 2xx or 3xx answer within a second passes.
    async fn passes(&self, ip: &str) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let probe = async {
            let mut stream = tokio::net::TcpStream::connect((ip, self.port)).await?;
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {ip}:{}\r\nConnection: close\r\n\r\n",
                self.path, self.port
            );
            stream.write_all(request.as_bytes()).await?;
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).await?;
            std::io::Result::Ok(head)
        };
        match tokio::time::timeout(Duration::from_secs(1), probe).await {
            Ok(Ok(head)) => matches!(
                &head[..10],
                [b'H', b'T', b'T', b'P', b'/', _, _, _, b' ', b'2' | b'3']
            ),
            _ => false,
        }
    }
}

impl ContainerStatus {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "image": self.image,
            "imageID": format!("s3flow-node-agent://{}", self.image),
            "containerID": format!("process://{}", self.name),
            "ready": self.ready(),
            "started": self.running(),
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        })
    }
}

fn now() -> String {
    Time(Timestamp::now()).0.to_string()
}

/// Everything one container needs to start, resolved from the pod.
struct Prepared {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    binds: Vec<Bind>,
    working_dir: PathBuf,
    log: PathBuf,
    termination_log: PathBuf,
    fallback_to_logs: bool,
}

/// The pod's whole run, from preparation to its final status (and its removal when deleted).
pub async fn run(node: Arc<Node>, pod: Pod, mut stop: StopSignal) {
    let name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let mut run = PodRun::new(node.clone(), &pod);
    let outcome = run.execute(&pod, &mut stop).await;
    if let Err(e) = &outcome {
        warn!(pod = %name, error = %format!("{e:#}"), "pod failed on the node");
    }
    if let Err(e) = run.finish(outcome.err()).await {
        warn!(pod = %name, error = %format!("{e:#}"), "final status not recorded");
    }
    info!(pod = %name, phase = run.phase, "pod done");
}

/// Removes a pod whose processes are gone, as the kubelet does once it has stopped them.
pub async fn delete_now(client: &Client, pod: &Pod) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    if let Err(e) = api.delete(&pod.name_any(), &params).await {
        info!(pod = %pod.name_any(), error = %e, "pod removal");
    }
}

struct PodRun {
    node: Arc<Node>,
    api: Api<Pod>,
    pod_name: String,
    uid: String,
    dir: PathBuf,
    restart: Restart,
    start_time: String,
    phase: &'static str,
    initialized: bool,
    init: Vec<ContainerStatus>,
    main: Vec<ContainerStatus>,
}

impl PodRun {
    fn new(node: Arc<Node>, pod: &Pod) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let uid = pod.uid().unwrap_or_default();
        Self {
            api: Api::namespaced(node.client.clone(), &pod.namespace().unwrap_or_default()),
            dir: node.state_dir.join("pods").join(&uid),
            node,
            pod_name: pod.name_any(),
            uid,
            restart: Restart::of(pod),
            start_time: now(),
            phase: "Pending",
            initialized: spec.init_containers.as_ref().is_none_or(|c| c.is_empty()),
            init: spec
                .init_containers
                .iter()
                .flatten()
                .map(|c| ContainerStatus::new(c, "PodInitializing"))
                .collect(),
            main: spec
                .containers
                .iter()
                .map(|c| ContainerStatus::new(c, "PodInitializing"))
                .collect(),
        }
    }

    async fn execute(&mut self, pod: &Pod, stop: &mut StopSignal) -> Result<()> {
        let prepared = loop {
            match self.prepare(pod).await {
                Ok(p) => break p,
                // Like the kubelet: stay Pending and retry until the inputs exist or the pod goes.
                Err(e) => {
                    let message = format!("{e:#}");
                    for c in self.init.iter_mut().chain(self.main.iter_mut()) {
                        c.state = json!({"waiting": {"reason": "CreateContainerConfigError", "message": message}});
                    }
                    self.patch().await;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = stop.changed() => return Ok(()),
                    }
                }
            }
        };
        let (init_prepared, main_prepared) = prepared.split_at(self.init.len());
        self.patch().await;

        let (tx, mut rx) = mpsc::channel::<(usize, ContainerStatus)>(16);
        for (i, prep) in init_prepared.iter().enumerate() {
            let status = self.init[i].clone();
            let policy = if self.restart == Restart::Never {
                Restart::Never
            } else {
                Restart::OnFailure
            };
            let task = run_container(prep, status, policy, stop.clone(), tx.clone(), i);
            tokio::pin!(task);
            let finished = loop {
                tokio::select! {
                    done = &mut task => break done,
                    Some((idx, s)) = rx.recv() => { self.init[idx] = s; self.patch().await; }
                }
            };
            while let Ok((idx, s)) = rx.try_recv() {
                self.init[idx] = s;
            }
            self.init[i] = finished;
            if self.init[i].exit_code != Some(0) {
                self.phase = "Failed";
                return Ok(());
            }
        }
        self.initialized = true;
        for c in &mut self.main {
            c.state = json!({"waiting": {"reason": "ContainerCreating"}});
        }
        self.phase = "Running";
        self.patch().await;

        let mut tasks = tokio::task::JoinSet::new();
        for (i, prep) in main_prepared.iter().enumerate() {
            let status = self.main[i].clone();
            let (prep, policy, stop, tx) =
                (clone_prepared(prep), self.restart, stop.clone(), tx.clone());
            tasks.spawn(async move {
                let s = run_container(&prep, status, policy, stop, tx, i).await;
                (i, s)
            });
        }
        drop(tx);
        let mut probe_period = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                // Updates first: a queued update must never land after its container's final state.
                biased;
                Some((idx, s)) = rx.recv() => {
                    if self.main[idx].exit_code.is_none() {
                        self.main[idx] = s;
                        self.patch().await;
                    }
                }
                _ = probe_period.tick() => {
                    if self.probe_readiness().await {
                        self.patch().await;
                    }
                }
                joined = tasks.join_next() => match joined {
                    Some(Ok((idx, s))) => self.main[idx] = s,
                    Some(Err(e)) => anyhow::bail!("container task: {e}"),
                    None => break,
                },
            }
        }
        while let Ok((idx, s)) = rx.try_recv() {
            if self.main[idx].exit_code.is_none() {
                self.main[idx] = s;
            }
        }
        self.phase = if self.main.iter().all(|c| c.exit_code == Some(0)) {
            "Succeeded"
        } else {
            "Failed"
        };
        Ok(())
    }

    async fn prepare(&self, pod: &Pod) -> Result<Vec<Prepared>> {
        let spec = pod.spec.clone().unwrap_or_default();
        let mut objects = NamespaceObjects::new(
            self.node.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        std::fs::create_dir_all(self.dir.join("containers"))?;
        let volumes = materialize_volumes(
            &self.node.client,
            pod,
            &mut objects,
            &self.dir.join("volumes"),
            HOST_IP,
        )
        .await?;
        let port = self.node.apiserver_port.to_string();
        let base: BTreeMap<String, String> = [
            ("KUBERNETES_SERVICE_HOST", HOST_IP.to_string()),
            ("KUBERNETES_SERVICE_PORT", port.clone()),
            ("KUBERNETES_SERVICE_PORT_HTTPS", port.clone()),
            ("KUBERNETES_PORT", format!("tcp://{HOST_IP}:{port}")),
            ("HOSTNAME", pod.name_any()),
            ("HOME", "/root".to_string()),
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            // This node has no instance metadata service: SDKs must not go looking for one
            // (nothing here may dial beyond loopback).
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut prepared = Vec::new();
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
        {
            let env = container_env(pod, c, &mut objects, &base, HOST_IP)
                .await
                .with_context(|| format!("container {}", c.name))?;
            let images = self.node.state_dir.join("images");
            let argv = argv(c, &self.node.s3flow_binary, &images, &env)?;
            let cdir = self.dir.join("containers").join(&c.name);
            std::fs::create_dir_all(&cdir)?;
            let termination_log = cdir.join("termination-log");
            let mut binds = vec![Bind {
                source: termination_log.clone(),
                target: PathBuf::from(
                    c.termination_message_path
                        .as_deref()
                        .unwrap_or("/dev/termination-log"),
                ),
                read_only: false,
            }];
            for m in c.volume_mounts.iter().flatten() {
                let mut source = volumes
                    .get(&m.name)
                    .with_context(|| format!("volumeMount {} names no volume", m.name))?
                    .clone();
                if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    source = source.join(sub);
                    std::fs::create_dir_all(&source)?;
                }
                binds.push(Bind {
                    source,
                    target: PathBuf::from(&m.mount_path),
                    read_only: m.read_only.unwrap_or(false),
                });
            }
            prepared.push(Prepared {
                argv,
                env,
                binds,
                working_dir: PathBuf::from(c.working_dir.as_deref().unwrap_or("/")),
                log: cdir.join("log"),
                termination_log,
                fallback_to_logs: c.termination_message_policy.as_deref()
                    == Some("FallbackToLogsOnError"),
            });
        }
        Ok(prepared)
    }

    fn status(&self, final_reason: Option<&str>) -> Value {
        let all_ready = self.main.iter().all(ContainerStatus::ready);
        let cond = |t: &str, ok: bool| json!({"type": t, "status": if ok {"True"} else {"False"}, "lastTransitionTime": now()});
        let mut status = json!({
            "phase": self.phase,
            "hostIP": HOST_IP, "hostIPs": [{"ip": HOST_IP}],
            "podIP": pod_ip(&self.uid), "podIPs": [{"ip": pod_ip(&self.uid)}],
            "startTime": self.start_time,
            "conditions": [
                cond("PodScheduled", true),
                cond("PodReadyToStartContainers", true),
                cond("Initialized", self.initialized),
                cond("ContainersReady", all_ready),
                cond("Ready", all_ready),
            ],
            "initContainerStatuses": self.init.iter().map(ContainerStatus::to_json).collect::<Vec<_>>(),
            "containerStatuses": self.main.iter().map(ContainerStatus::to_json).collect::<Vec<_>>(),
        });
        if let Some(message) = final_reason {
            status["message"] = json!(message);
        }
        status
    }

    /// Runs the readiness probes of running containers; true when an answer changed.
    async fn probe_readiness(&mut self) -> bool {
        let ip = pod_ip(&self.uid);
        let mut changed = false;
        for c in self.main.iter_mut().filter(|c| c.running()) {
            if let Some(probe) = &c.readiness {
                let passed = probe.passes(&ip).await;
                changed |= passed != c.probe_passed;
                c.probe_passed = passed;
            }
        }
        changed
    }

    /// An intermediate status; a failed patch is logged, and the next one carries the state again.
    async fn patch(&self) {
        if let Err(e) = self.patch_with(None).await {
            warn!(pod = %self.pod_name, error = %format!("{e:#}"), "status update");
        }
    }

    async fn patch_with(&self, message: Option<&str>) -> Result<()> {
        let body = json!({"metadata": {"uid": self.uid}, "status": self.status(message)});
        self.api
            .patch_status(
                &self.pod_name,
                &PatchParams::default(),
                &Patch::Merge(&body),
            )
            .await
            .context("patching pod status")?;
        Ok(())
    }

    /// Records the terminal phase; never goes back from it.
    async fn finish(&mut self, error: Option<anyhow::Error>) -> Result<()> {
        if !matches!(self.phase, "Succeeded" | "Failed") {
            self.phase =
                if !self.main.is_empty() && self.main.iter().all(|c| c.exit_code == Some(0)) {
                    "Succeeded"
                } else {
                    "Failed"
                };
        }
        for c in self.init.iter_mut().chain(self.main.iter_mut()) {
            if c.state.get("terminated").is_none() {
                c.state = json!({"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                    "message": "the container never ran or was stopped before it started",
                    "startedAt": null, "finishedAt": now()}});
            }
        }
        let message = error.map(|e| format!("{e:#}"));
        self.patch_with(message.as_deref()).await
    }
}

fn clone_prepared(p: &Prepared) -> Prepared {
    Prepared {
        argv: p.argv.clone(),
        env: p.env.clone(),
        binds: p
            .binds
            .iter()
            .map(|b| Bind {
                source: b.source.clone(),
                target: b.target.clone(),
                read_only: b.read_only,
            })
            .collect(),
        working_dir: p.working_dir.clone(),
        log: p.log.clone(),
        termination_log: p.termination_log.clone(),
        fallback_to_logs: p.fallback_to_logs,
    }
}

/// Runs one container until it is done under `policy`, sending each state change; returns the last.
async fn run_container(
    prep: &Prepared,
    mut status: ContainerStatus,
    policy: Restart,
    mut stop: StopSignal,
    updates: mpsc::Sender<(usize, ContainerStatus)>,
    index: usize,
) -> ContainerStatus {
    let pid_dir = prep.log.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut backoff = Duration::from_secs(1);
    loop {
        if stop.borrow().is_some() {
            return status;
        }
        let _ = std::fs::write(&prep.termination_log, b"");
        let started_at = now();
        let child = spawn(
            &prep.argv,
            &prep.env,
            &prep.binds,
            &prep.working_dir,
            &prep.log,
        );
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                status.state = json!({"terminated": {"exitCode": 128, "reason": "StartError",
                    "message": format!("{e:#}"), "startedAt": started_at, "finishedAt": now()}});
                status.exit_code = Some(128);
                return status;
            }
        };
        let pid = child.id().expect("a just-spawned child has a pid");
        // Whatever ends this container, its whole process group goes with it.
        let _group = KillGroupOnDrop(pid);
        let pid_file = pid_dir.join("pid");
        let _ = std::fs::write(&pid_file, pid.to_string());
        status.state = json!({"running": {"startedAt": started_at}});
        let _ = updates.send((index, status.clone())).await;

        let exit = tokio::select! {
            exit = child.wait() => exit,
            _ = stop.changed() => {
                let grace = stop.borrow().unwrap_or(30).max(0) as u64;
                signal_group(pid, libc::SIGTERM);
                match tokio::time::timeout(Duration::from_secs(grace), child.wait()).await {
                    Ok(exit) => exit,
                    Err(_) => {
                        signal_group(pid, libc::SIGKILL);
                        child.wait().await
                    }
                }
            }
        };
        let _ = std::fs::remove_file(&pid_file);
        let code = match exit {
            Ok(s) => s.code().unwrap_or_else(|| {
                128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(9)
            }),
            Err(_) => 128,
        };
        let message = termination_message(prep, code);
        let mut terminated = json!({"exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": started_at, "finishedAt": now()});
        if !message.is_empty() {
            terminated["message"] = json!(message);
        }
        status.state = json!({"terminated": terminated});
        status.exit_code = Some(code);
        let again = match policy {
            Restart::Always => true,
            Restart::OnFailure => code != 0,
            Restart::Never => false,
        };
        if !again || stop.borrow().is_some() {
            return status;
        }
        status.last_state = status.state.clone();
        status.restart_count += 1;
        status.exit_code = None;
        status.state = json!({"waiting": {"reason": "CrashLoopBackOff"}});
        let _ = updates.send((index, status.clone())).await;
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return status,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

struct KillGroupOnDrop(u32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        signal_group(self.0, libc::SIGKILL);
    }
}

/// The termination message file's content, or the log's tail for `FallbackToLogsOnError` failures.
fn termination_message(prep: &Prepared, code: i32) -> String {
    let bytes = std::fs::read(&prep.termination_log).unwrap_or_default();
    let message = &bytes[..bytes.len().min(MAX_TERMINATION_MESSAGE)];
    if message.is_empty() && code != 0 && prep.fallback_to_logs {
        let log = std::fs::read(&prep.log).unwrap_or_default();
        let tail = &log[log.len().saturating_sub(MAX_TERMINATION_MESSAGE)..];
        return String::from_utf8_lossy(tail).into_owned();
    }
    String::from_utf8_lossy(message).into_owned()
}
