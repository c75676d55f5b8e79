//! The scan engine: split one S3 object into byte ranges and process every record exactly once.
//! No Kubernetes types: the CLI, the chunk workers and the controller all use it.

pub mod split;
pub mod sql;
pub mod value;
