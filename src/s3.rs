//! S3 client setup shared by the engines, the controller and the CLI: endpoint, region, path-style
//! addressing and credentials, with no Kubernetes types.

use std::fmt;

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// Region used when neither the settings nor the default AWS chain name one.
pub const FALLBACK_REGION: &str = "us-east-1";

/// Static credentials, as read from a Secret. Debug output never shows the secret parts.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where an S3-compatible store is and how to reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// Endpoint URL; `None` is AWS S3 for the region.
    pub endpoint: Option<String>,
    /// Signing region; `None` takes the default chain's, else [`FALLBACK_REGION`].
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket`.
    pub force_path_style: bool,
    /// Static credentials; `None` uses the default AWS chain (environment, IRSA, Pod Identity, ...).
    pub credentials: Option<StaticCredentials>,
}

/// Builds an S3 client for `settings`. With static credentials, or a region (an endpoint implies
/// one), nothing of the default chain is consulted: no instance metadata service is ever probed
/// for what the settings already say.
pub async fn client(settings: &S3Settings) -> aws_sdk_s3::Client {
    let region = settings
        .region
        .clone()
        .or_else(|| {
            settings
                .endpoint
                .as_ref()
                .map(|_| FALLBACK_REGION.to_string())
        })
        .map(Region::new);
    let mut builder = match &settings.credentials {
        Some(c) => aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(region.unwrap_or_else(|| Region::new(FALLBACK_REGION)))
            .credentials_provider(Credentials::new(
                &c.access_key_id,
                &c.secret_access_key,
                c.session_token.clone(),
                None,
                "s3flow-secret",
            )),
        None => {
            let mut loader = aws_config::defaults(BehaviorVersion::latest());
            if let Some(region) = region {
                loader = loader.region(region);
            }
            let shared = loader.load().await;
            let region = shared
                .region()
                .cloned()
                .unwrap_or_else(|| Region::new(FALLBACK_REGION));
            aws_sdk_s3::config::Builder::from(&shared).region(region)
        }
    };
    builder = builder
        .force_path_style(settings.force_path_style)
        // Throttling, 5xx and dropped connections cost a retry of one request, not the transfer.
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(8)
                .with_initial_backoff(std::time::Duration::from_millis(200)),
        );
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let c = StaticCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
            session_token: Some("FwoGZXIvYXdzE".into()),
        };
        let shown = format!(
            "{:?}",
            S3Settings {
                credentials: Some(c),
                ..Default::default()
            }
        );
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(!shown.contains("wJalrXUtnFEMI"));
        assert!(!shown.contains("FwoGZXIvYXdzE"));
    }
}

/// An S3 request's failure: the service's error code and a message with its context.
#[derive(Debug)]
pub struct ServiceFailure {
    /// S3's error code (`NoSuchKey`, `AccessDenied`, ...), `HTTP <status>` when the answer had no
    /// body (HEAD), empty when no answer came.
    pub code: String,
    pub message: String,
}

impl ServiceFailure {
    pub fn of<E>(context: &str, error: SdkError<E, HttpResponse>) -> ServiceFailure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        // HEAD answers carry no error body: fall back to the status code.
        let status = error.raw_response().map(|r| r.status().as_u16());
        let code = match (error.code(), status) {
            (Some(code), _) => code.to_string(),
            (None, Some(403)) => "AccessDenied".to_string(),
            (None, Some(404)) => "NotFound".to_string(),
            (None, Some(412)) => "PreconditionFailed".to_string(),
            (None, Some(status)) => format!("HTTP {status}"),
            (None, None) => String::new(),
        };
        let message = format!(
            "{context}: {}",
            error.message().map(str::to_string).unwrap_or_else(|| {
                let mut text = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(e) = source {
                    text = format!("{text}: {e}");
                    source = e.source();
                }
                text
            })
        );
        ServiceFailure { code, message }
    }

    pub fn is_access_denied(&self) -> bool {
        matches!(
            self.code.as_str(),
            "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AllAccessDisabled"
        )
    }
}

impl fmt::Display for ServiceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.code.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{} ({})", self.message, self.code)
        }
    }
}
