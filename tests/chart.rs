//! The Helm chart with the real `helm`: it lints, renders against the real API server (its
//! kubeVersion check included), and every object it renders passes the server's dry run.

mod common;

use std::process::Command;

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn chart_lints_renders_and_passes_server_dry_run() {
    let env = common::env().await;
    let ns = common::namespace(&env.client, "chart").await;
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/s3flow");
    let lint = common::run("helm", &["lint", "--strict", chart], b"");
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    let rendered = common::run(
        "helm",
        // CRDs are left out: helm would refuse to adopt the ones other tests installed.
        &[
            "template",
            &ns,
            chart,
            "--namespace",
            &ns,
            "--validate",
            "--set",
            "addressPolicy.allowCidrs={10.1.0.0/16,127.0.0.1/32}",
            "--set",
            "addressPolicy.denyCidrs={10.96.0.0/12}",
            "--set",
            "defaultCredentials.namespaces={platform}",
            "--set",
            "ingest.memoryBudget=256Mi",
            "--set",
            "scan.allowedImages={registry.example.com/*}",
        ],
        b"",
    );
    let kinds: Vec<&str> = rendered
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
    ] {
        assert!(
            kinds.contains(&kind),
            "{kind} missing from the chart: {kinds:?}"
        );
    }
    // The values reach the operator's flags.
    for flag in [
        "- --allow-cidr=10.1.0.0/16",
        "- --allow-cidr=127.0.0.1/32",
        "- --deny-cidr=10.96.0.0/12",
        "- --default-credentials-namespace=platform",
        "- --ingest-memory-budget=256Mi",
        "- --min-source-bytes-per-second=1024",
        "- --allowed-image=registry.example.com/*",
        "- --max-concurrent-ingests=4",
        "- --leader-elect",
        "- --http-port=8080",
    ] {
        assert!(
            rendered.contains(flag),
            "{flag} missing from the Deployment:\n{rendered}"
        );
    }
    let applied = common::run(
        "kubectl",
        &["apply", "--dry-run=server", "-n", &ns, "-f", "-"],
        rendered.as_bytes(),
    );
    assert!(
        applied.contains(&format!(
            "deployment.apps/{ns}-s3flow created (server dry run)"
        )),
        "{applied}"
    );
    common::delete_namespace(&env.client, &ns).await;
}

/// Renders the chart with `values` (no cluster needed): its output, or helm's refusal.
fn template(values: &[&str]) -> Result<String, String> {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/s3flow");
    let mut args = vec!["template", "s3flow", chart, "--kube-version", "1.34.0"];
    for v in values {
        args.extend(["--set", v]);
    }
    let out = Command::new("helm").args(&args).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
#[ignore = "needs tests/cluster/up.sh"]
fn chart_options_render_and_bad_values_are_refused() {
    // appVersion follows the crate, so the default image is the binary's own version.
    let chart_yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/s3flow/Chart.yaml"
    ))
    .unwrap();
    assert!(
        chart_yaml.contains(&format!("appVersion: \"{}\"", env!("CARGO_PKG_VERSION"))),
        "{chart_yaml}"
    );
    let defaults = template(&[]).unwrap();
    // The image the chart runs is the Dockerfile's: the same non-root user as the pod's security
    // context, and `s3flow` on PATH for the chunk Jobs' command.
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    assert!(dockerfile.contains("\nUSER 65532:65532\n") && defaults.contains("runAsUser: 65532"));
    assert!(dockerfile.contains("COPY --from=build /out/s3flow /usr/local/bin/s3flow"));
    assert!(dockerfile.contains("ENV PATH=/usr/local/bin"));
    assert_eq!(dockerfile.matches("\nFROM ").count(), 2, "multi-stage");
    assert!(defaults.contains(&format!(
        "image: \"ghcr.io/s3flow/s3flow:{}\"",
        env!("CARGO_PKG_VERSION")
    )));
    for hardening in [
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "drop:\n              - ALL",
        "path: /readyz",
        "path: /healthz",
    ] {
        assert!(defaults.contains(hardening), "{hardening} missing");
    }
    assert!(
        !defaults.contains("kind: NetworkPolicy") && !defaults.contains("kind: ServiceMonitor")
    );

    // Watched namespaces: bindings there only, no cluster-wide binding.
    let scoped = template(&["watchNamespaces={team-a,team-b}"]).unwrap();
    assert!(!scoped.contains("kind: ClusterRoleBinding"), "{scoped}");
    for flag in ["- --namespace=team-a", "- --namespace=team-b"] {
        assert!(scoped.contains(flag), "{flag} missing");
    }
    assert_eq!(
        scoped.matches("kind: RoleBinding").count(),
        4,
        "two namespaces, the Lease and the operator's own Services"
    );

    // Optional parts: a ServiceMonitor, and a NetworkPolicy keeping chunk workers off metadata.
    let extras = template(&[
        "metrics.serviceMonitor.enabled=true",
        "networkPolicy.enabled=true",
        "watchNamespaces={team-a}",
    ])
    .unwrap();
    assert!(extras.contains("kind: ServiceMonitor"));
    assert!(extras.contains("kind: NetworkPolicy"));
    assert!(extras.contains("key: s3flow.io/scan-uid"));
    assert!(extras.contains("- 169.254.169.254/32") && extras.contains("- fd00:ec2::254/128"));

    // Without leader election: no Lease Role, and never two operators at once.
    let single = template(&["leaderElection.enabled=false"]).unwrap();
    assert!(!single.contains("-leader-election\n") && !single.contains("--leader-elect"));
    // The Role to list the operator's own Services is there either way.
    assert!(single.contains("-own-services\n") && defaults.contains("-own-services\n"));
    assert!(single.contains("type: Recreate"));

    // Identity: off by default; on, a Role per listed namespace (never the release namespace or
    // kube-system), token requests only in the namespaced mode, never cluster-wide.
    assert!(!defaults.contains("S3FLOW_IDENTITY") && !defaults.contains("serviceaccounts"));
    let identity = |rbac: &str| {
        template(&[
            "identity.enabled=true",
            "identity.namespaces={team-a,default,kube-system}",
            &format!("identity.rbac={rbac}"),
            "identity.sts[0].s3Endpoint=https://minio.storage:9000",
            "identity.sts[0].stsEndpoint=https://minio.storage:9000",
            "identity.sts[0].audience=sts.min.io",
        ])
        .unwrap()
    };
    let namespaced = identity("namespaced");
    let roles: Vec<&str> = namespaced
        .split("---")
        .filter(|doc| doc.contains("name: s3flow-identity"))
        .collect();
    assert_eq!(roles.len(), 2, "a Role and its RoleBinding: {roles:?}");
    assert!(roles.iter().all(|doc| doc.contains("namespace: team-a")));
    assert!(
        roles
            .iter()
            .any(|doc| doc.contains("resources: [serviceaccounts/token]"))
    );
    let cluster_role = namespaced
        .split("---")
        .find(|doc| doc.contains("kind: ClusterRole\n"))
        .unwrap();
    assert!(!cluster_role.contains("serviceaccounts"), "{cluster_role}");
    assert!(namespaced.contains("name: S3FLOW_IDENTITY"));
    assert!(namespaced.contains(r#"\"stsEndpoint\":\"https://minio.storage:9000\""#));
    let delegated = identity("perServiceAccount");
    assert!(delegated.contains("resources: [serviceaccounts]"));
    assert!(!delegated.contains("serviceaccounts/token"));

    // How many failures in a row end a resource reaches the operator's flag.
    assert!(defaults.contains("- --reconcile-retries=12"));
    let patient = template(&["reconcileRetries=40"]).unwrap();
    assert!(patient.contains("- --reconcile-retries=40"), "{patient}");

    // values.schema.json refuses what the operator could not run with.
    for (bad, says) in [
        ("replicaCount=-1", "replicaCount"),
        ("logFormat=xml", "logFormat"),
        ("metrics.port=70000", "port"),
        ("addressPolicy.allowCidrs={not-a-cidr}", "allowCidrs"),
        ("ingest.memoryBudget=1.5Gi", "memoryBudget"),
        (
            "defaultCredentials.namespaces={Not_A_Namespace}",
            "namespaces",
        ),
        ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
        ("unknownValue=1", "unknownValue"),
        ("reconcileRetries=0", "reconcileRetries"),
        ("identity.rbac=cluster", "rbac"),
        (
            "identity.sessionDurationSeconds=60",
            "sessionDurationSeconds",
        ),
        ("identity.sts[0].s3Endpoint=minio:9000", "s3Endpoint"),
    ] {
        let refusal = template(&[bad]).expect_err(bad);
        assert!(refusal.contains(says), "{bad}: {refusal}");
    }
}
