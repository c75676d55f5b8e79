//! s3flow-node-agent: test support that does a kubelet's job on a machine without a container
//! runtime. It registers a Node, runs each pod bound to it as local processes and reports their
//! status, so that the real scheduler, Job controller and garbage collector can be exercised.

mod inputs;
mod pod;
mod process;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, NodeSpec, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::pod::HOST_IP;

#[derive(Parser)]
struct Args {
    /// Kubeconfig of the API server to register with.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Name of the Node to register.
    #[arg(long)]
    node_name: String,
    /// The binary that the s3flow image's entrypoint maps to.
    #[arg(long)]
    s3flow_binary: PathBuf,
    /// Where pod volumes, logs and termination messages live.
    #[arg(long)]
    state_dir: PathBuf,
    /// The API server's port on 127.0.0.1, given to pods as KUBERNETES_SERVICE_PORT.
    #[arg(long)]
    apiserver_port: u16,
}

/// Running pods by uid, with the sender that asks each to stop.
type Running = Arc<Mutex<HashMap<String, watch::Sender<Option<i64>>>>>;

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
    std::fs::create_dir_all(args.state_dir.join("pods"))?;
    let node = Arc::new(pod::Node {
        client: client.clone(),
        name: args.node_name.clone(),
        s3flow_binary: std::fs::canonicalize(&args.s3flow_binary)
            .with_context(|| format!("s3flow binary {}", args.s3flow_binary.display()))?,
        state_dir: args.state_dir.clone(),
        apiserver_port: args.apiserver_port,
    });
    register(&client, &args.node_name).await?;
    tokio::spawn(heartbeat(client.clone(), args.node_name.clone()));

    let running: Running = Arc::default();
    let agent = watch_pods(node, running.clone());
    tokio::select! {
        result = agent => result,
        _ = shutdown_signal() => {
            info!("stopping: killing every pod process");
            for stop in running.lock().expect("lock").values() {
                let _ = stop.send(Some(2));
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Creates the Node, clears the not-ready taint admission puts on new Nodes (no node-lifecycle
/// controller runs to do it), and reports it Ready with capacity and a loopback address.
async fn register(client: &Client, name: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".into(), name.into()),
                ("kubernetes.io/os".into(), "linux".into()),
                ("kubernetes.io/arch".into(), "amd64".into()),
            ])),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: None,
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).context("creating the Node"),
    }
    nodes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await
        .context("removing the not-ready taint")?;
    patch_node_status(client, name).await
}

async fn patch_node_status(client: &Client, name: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_else(|| "1048576".into());
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let capacity = json!({"cpu": cpus.to_string(), "memory": format!("{memory_kib}Ki"), "pods": "250", "ephemeral-storage": "100Gi"});
    let status = json!({"status": {
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [{"type": "InternalIP", "address": HOST_IP}, {"type": "Hostname", "address": name}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "s3flow node agent is running pods as local processes",
            "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
            "kubeletVersion": "s3flow-node-agent", "kubeProxyVersion": "", "containerRuntimeVersion": "process://",
            "kernelVersion": "", "osImage": "", "machineID": "", "systemUUID": "", "bootID": ""},
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .context("reporting the Node's status")?;
    Ok(())
}

async fn heartbeat(client: Client, name: String) {
    loop {
        tokio::time::sleep(Duration::from_secs(20)).await;
        if let Err(e) = patch_node_status(&client, &name).await {
            warn!(error = %format!("{e:#}"), "node heartbeat");
        }
    }
}

/// Starts each new pod bound to this node, and stops each pod whose deletion is requested.
async fn watch_pods(node: Arc<pod::Node>, running: Running) -> Result<()> {
    let pods: Api<Pod> = Api::all(node.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", node.name));
    let mut started: HashSet<String> = HashSet::new();
    let mut events = watcher::watcher(pods, config).boxed();
    while let Some(event) = events.try_next().await.context("watching pods")? {
        let pod = match event {
            Event::Apply(pod) | Event::InitApply(pod) => pod,
            Event::Delete(pod) => {
                if let Some(stop) = running
                    .lock()
                    .expect("lock")
                    .get(&pod.uid().unwrap_or_default())
                {
                    let _ = stop.send(Some(0));
                }
                continue;
            }
            Event::Init | Event::InitDone => continue,
        };
        let uid = pod.uid().unwrap_or_default();
        let terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
            if let Some(stop) = running.lock().expect("lock").get(&uid) {
                if stop.borrow().is_none() {
                    let _ = stop.send(Some(grace));
                }
                continue;
            }
            // Nothing runs for it here (never started, or already finished): remove it now.
            tokio::spawn({
                let client = node.client.clone();
                async move { pod::delete_now(&client, &pod).await }
            });
            continue;
        }
        if terminal || !started.insert(uid.clone()) {
            continue;
        }
        info!(pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()), "starting pod");
        let (tx, rx) = watch::channel(None);
        running.lock().expect("lock").insert(uid.clone(), tx);
        let (node, running) = (node.clone(), running.clone());
        tokio::spawn(async move {
            pod::run(node.clone(), pod.clone(), rx).await;
            // Removed under the lock first: a deletion seen after this finds nothing running and
            // deletes the pod itself; one seen before left its signal here.
            let deleting = running
                .lock()
                .expect("lock")
                .remove(&uid)
                .is_some_and(|stop| stop.borrow().is_some());
            if deleting {
                pod::delete_now(&node.client, &pod).await;
            }
        });
    }
    Ok(())
}
