//! Jobs through the real scheduler and Job controller, run by the node agent: the s3flow image maps to
//! the binary under test, exit codes and termination messages arrive in the pod status, inputs
//! (env from fieldRef, Secret and ConfigMap; emptyDir; the ServiceAccount token) reach the process,
//! and deletion stops it with SIGTERM.

mod common;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::wait::conditions;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

fn job_condition(job: Option<&Job>, kind: &str) -> bool {
    job.and_then(|j| j.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

async fn create_job(
    client: &Client,
    ns: &str,
    name: &str,
    containers: serde_json::Value,
) -> Api<Job> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": containers}}}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    jobs
}

/// The only pod of a Job, and its first container's terminated state.
async fn job_pod(
    client: &Client,
    ns: &str,
    job: &str,
) -> (Pod, k8s_openapi::api::core::v1::ContainerStateTerminated) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1, "one pod for job {job}");
    let pod = list.items.into_iter().next().unwrap();
    let terminated = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .expect("container terminated");
    (pod, terminated)
}

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn s3flow_version_job_completes_with_its_termination_message() {
    let env = common::env().await;
    let ns = common::namespace(&env.client, "version").await;
    let jobs = create_job(
        &env.client,
        &ns,
        "version",
        json!([{
            "name": "s3flow", "image": "ghcr.io/s3flow/s3flow:latest",
            "args": ["version", "--termination-message-path", "/dev/termination-log"],
        }]),
    )
    .await;
    common::wait(
        jobs,
        "version",
        |j: Option<&Job>| job_condition(j, "Complete"),
        60,
    )
    .await;
    let (pod, terminated) = job_pod(&env.client, &ns, "version").await;
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Succeeded"));
    assert_eq!(terminated.exit_code, 0);
    assert_eq!(terminated.reason.as_deref(), Some("Completed"));
    let message: serde_json::Value =
        serde_json::from_str(terminated.message.as_deref().unwrap()).unwrap();
    assert_eq!(message, s3flow::version_json());
    common::delete_namespace(&env.client, &ns).await;
}

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn failing_job_fails_with_exit_code_and_message() {
    let env = common::env().await;
    let ns = common::namespace(&env.client, "failing").await;
    let jobs = create_job(
        &env.client,
        &ns,
        "failing",
        json!([{
            "name": "main", "image": "busybox:1.36",
            "command": ["sh", "-c", "echo 'chunk 7: bad record' > /dev/termination-log; exit 3"],
        }]),
    )
    .await;
    let job = common::wait(
        jobs,
        "failing",
        |j: Option<&Job>| job_condition(j, "Failed"),
        60,
    )
    .await;
    assert_eq!(job.status.unwrap().failed, Some(1));
    let (pod, terminated) = job_pod(&env.client, &ns, "failing").await;
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Failed"));
    assert_eq!(terminated.exit_code, 3);
    assert_eq!(terminated.reason.as_deref(), Some("Error"));
    assert_eq!(terminated.message.as_deref(), Some("chunk 7: bad record\n"));
    common::delete_namespace(&env.client, &ns).await;
}

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn pod_inputs_reach_the_process() {
    let env = common::env().await;
    let client = &env.client;
    let ns = common::namespace(client, "inputs").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"mode": "fast"}}))
            .unwrap();
    config_maps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();

    // The init container leaves a file in the emptyDir; the main container reads it from its working
    // dir, reports its env, and calls the API server with the projected ServiceAccount token.
    let script = r#"
        sa=/var/run/secrets/kubernetes.io/serviceaccount
        who=$(curl -s --cacert $sa/ca.crt -H "Authorization: Bearer $(cat $sa/token)" \
          -H 'Content-Type: application/json' -X POST \
          -d '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}' \
          https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/apis/authentication.k8s.io/v1/selfsubjectreviews \
          | tr -d ' \n' | sed 's/.*"username":"\([^"]*\)".*/\1/')
        printf '%s|%s|%s|%s|%s|%s|%s|%s' "$POD" "$POD_IP" "$TOKEN" "$MODE" "$(cat from-init.txt)" "$(pwd)" "$KUBERNETES_SERVICE_HOST" "$who" > /dev/termination-log
    "#;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "inputs"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "shared", "emptyDir": {}}],
            "initContainers": [{
                "name": "init", "image": "debian:bookworm",
                "command": ["sh", "-c", "echo -n \"from $(NAME)\" > /s3flow-test/shared/from-init.txt"],
                "env": [{"name": "NAME", "value": "init"}],
                "volumeMounts": [{"name": "shared", "mountPath": "/s3flow-test/shared"}],
            }],
            "containers": [{
                "name": "main", "image": "debian:bookworm", "command": ["sh", "-c", script],
                "workingDir": "/s3flow-test/shared",
                "env": [
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                ],
                "volumeMounts": [{"name": "shared", "mountPath": "/s3flow-test/shared"}],
            }],
        }}}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    common::wait(
        jobs,
        "inputs",
        |j: Option<&Job>| job_condition(j, "Complete"),
        60,
    )
    .await;
    let (pod, terminated) = job_pod(client, &ns, "inputs").await;
    let fields: Vec<String> = terminated
        .message
        .unwrap()
        .split('|')
        .map(String::from)
        .collect();
    // The pod's own loopback address, as its status says.
    let pod_ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    assert!(
        pod_ip.starts_with("127.") && !pod_ip.starts_with("127.0."),
        "{pod_ip}"
    );
    assert_eq!(
        fields,
        [
            pod.name_any(),
            pod_ip,
            "s3cr3t".into(),
            "fast".into(),
            "from init".into(),
            "/s3flow-test/shared".into(),
            "127.0.0.1".into(),
            format!("system:serviceaccount:{ns}:default"),
        ]
    );
    common::delete_namespace(client, &ns).await;
}

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn deleting_a_pod_stops_its_process_with_sigterm_then_sigkill() {
    let env = common::env().await;
    let client = &env.client;
    let ns = common::namespace(client, "deletion").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = |name: &str, script: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "volumes": [{"name": "data", "emptyDir": {}}],
                "containers": [{"name": "main", "image": "debian:bookworm", "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "data", "mountPath": "/s3flow-test/data"}]}],
            }
        }))
        .unwrap()
    };
    let graceful = "trap 'echo stopped > /s3flow-test/data/term; exit 0' TERM; touch /s3flow-test/data/up; while true; do sleep 0.1; done";
    let stubborn = "trap '' TERM; touch /s3flow-test/data/up; while true; do sleep 0.1; done";
    for (name, script) in [("graceful", graceful), ("stubborn", stubborn)] {
        let created = pods
            .create(&PostParams::default(), &pod(name, script))
            .await
            .unwrap();
        let uid = created.uid().unwrap();
        common::wait(pods.clone(), name, conditions::is_pod_running(), 60).await;
        let volume = env
            .env_dir
            .join("node/pods")
            .join(&uid)
            .join("volumes/data");
        // Running is reported at spawn; wait until the shell has set its trap.
        for _ in 0..100 {
            if volume.join("up").exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let params = DeleteParams {
            grace_period_seconds: Some(2),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        pods.delete(name, &params).await.unwrap();
        common::wait_deleted(pods.clone(), name, &uid, 30).await;
        let took = started.elapsed();
        match name {
            "graceful" => {
                assert_eq!(
                    std::fs::read_to_string(volume.join("term")).unwrap(),
                    "stopped\n"
                );
            }
            _ => {
                assert!(!volume.join("term").exists());
                assert!(
                    took >= Duration::from_secs(2),
                    "SIGKILL must wait out the grace period, took {took:?}"
                );
            }
        }
    }
    common::delete_namespace(client, &ns).await;
}
