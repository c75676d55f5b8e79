//! `crds/` and the chart hold exactly what `s3flow crd` prints: regenerate with
//! `cargo run -- crd > crds/s3flow.yaml && cp crds/s3flow.yaml charts/s3flow/crds/`. The chart's
//! examples are copies of `examples/`: `cp examples/<file> charts/s3flow/examples/`.

use std::process::Command;

#[test]
fn checked_in_crds_match_the_generated_ones() {
    let out = Command::new(env!("CARGO_BIN_EXE_s3flow"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    for file in ["crds/s3flow.yaml", "charts/s3flow/crds/s3flow.yaml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{file} is not what `s3flow crd` prints; regenerate it (see this test's header)"
        );
    }
}

#[test]
fn chart_examples_are_copies_of_the_repos() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_dir(root.join("charts/s3flow/examples")).unwrap();
    let mut names = Vec::new();
    for entry in shipped {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let copy =
            std::fs::read_to_string(root.join("charts/s3flow/examples").join(&name)).unwrap();
        let original =
            std::fs::read_to_string(root.join("examples").join(&name)).unwrap_or_default();
        assert!(
            copy == original,
            "charts/s3flow/examples/{name} differs from examples/{name}; copy it again"
        );
        names.push(name);
    }
    // NOTES.txt prints this one.
    assert!(
        names.iter().any(|n| n == "ingest-then-scan.yaml"),
        "{names:?}"
    );
}
