//! s3flow: a Kubernetes operator that streams and processes very large S3 objects with bounded memory.

// `pub` is the library's API (the CLI and the tests use it); what is internal says pub(crate).
// Every public item says what it is: the tests and the CLI read it as documentation.
#![warn(unreachable_pub, missing_docs)]

pub mod address;
pub mod api;
pub mod controller;
pub mod floor;
pub mod identity;
pub mod ingest;
pub mod redact;
pub mod s3;
pub mod scan;
pub mod shutdown;
pub mod size;
pub mod worker;

#[cfg(test)]
pub(crate) mod held;

/// Version of this build, as `s3flow version` reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The one-line JSON `s3flow version` prints.
pub fn version_json() -> serde_json::Value {
    serde_json::json!({
        "name": "s3flow",
        "version": VERSION,
        "apiVersion": format!("{}/v1alpha1", api::GROUP),
    })
}
