//! Command-line front ends of the engines.

pub mod ingest;
pub mod scan;
pub mod worker;

/// The S3 client of the CLI commands: an `--endpoint` means path-style addressing; credentials
/// come from the default AWS chain. The user's own machine: any address may be reached.
pub async fn s3_client(
    endpoint: Option<String>,
    region: Option<String>,
) -> anyhow::Result<aws_sdk_s3::Client> {
    Ok(s3flow::s3::client(&s3flow::s3::S3Settings {
        force_path_style: endpoint.is_some(),
        endpoint,
        region,
        credentials: None,
        policy: None,
    })
    .await?)
}

/// Splits `s3://bucket/key` into bucket and key.
pub fn parse_s3_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| anyhow::anyhow!("{url:?} is not an s3://bucket/key URL"))?;
    match rest.split_once('/') {
        Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
            Ok((bucket.into(), key.into()))
        }
        _ => anyhow::bail!("{url:?} needs a bucket and a key: s3://bucket/key"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_urls() {
        assert_eq!(
            parse_s3_url("s3://b/k/x.csv").unwrap(),
            ("b".into(), "k/x.csv".into())
        );
        for bad in ["b/k", "s3://b", "s3://b/", "s3:///k", "https://b/k"] {
            assert!(parse_s3_url(bad).is_err(), "{bad}");
        }
    }
}
