//! The Helm chart with the real `helm`: it lints, renders against the real API server (its
//! kubeVersion check included), and every object it renders passes the server's dry run.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} on PATH: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn chart_lints_renders_and_passes_server_dry_run() {
    let env = common::env().await;
    let ns = common::namespace(&env.client, "chart").await;
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/s3flow");
    let lint = run("helm", &["lint", "--strict", chart], None);
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    let rendered = run(
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
            "ingest.allowSourceCidrs={10.1.0.0/16,127.0.0.1/32}",
        ],
        None,
    );
    let kinds: Vec<&str> = rendered
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    ] {
        assert!(
            kinds.contains(&kind),
            "{kind} missing from the chart: {kinds:?}"
        );
    }
    // The values reach the operator's flags.
    for flag in [
        "- --allow-source-cidr=10.1.0.0/16",
        "- --allow-source-cidr=127.0.0.1/32",
        "- --max-concurrent-ingests=4",
    ] {
        assert!(
            rendered.contains(flag),
            "{flag} missing from the Deployment:\n{rendered}"
        );
    }
    let applied = run(
        "kubectl",
        &["apply", "--dry-run=server", "-n", &ns, "-f", "-"],
        Some(&rendered),
    );
    assert!(
        applied.contains(&format!(
            "deployment.apps/{ns}-s3flow created (server dry run)"
        )),
        "{applied}"
    );
    common::delete_namespace(&env.client, &ns).await;
}
