//! `crds/` and the chart hold exactly what `s3flow crd` prints: regenerate with
//! `cargo run -- crd > crds/s3flow.yaml && cp crds/s3flow.yaml charts/s3flow/crds/`.

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
