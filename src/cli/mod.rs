//! Command-line front ends of the engines.

pub(crate) mod ingest;
pub(crate) mod scan;
pub(crate) mod worker;

/// The S3 client of the CLI commands: an `--endpoint` means path-style addressing; credentials
/// come from the default AWS chain. The user's own machine: any address may be reached.
pub(crate) async fn s3_client(
    endpoint: Option<String>,
    region: Option<String>,
) -> anyhow::Result<aws_sdk_s3::Client> {
    Ok(s3flow::s3::client(&s3flow::s3::S3Settings {
        force_path_style: endpoint.is_some(),
        endpoint,
        region,
        credentials: s3flow::s3::S3Credentials::DefaultChain,
        policy: None,
    })
    .await?)
}
