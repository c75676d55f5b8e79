//! The S3 layer shared by the engines, the controller and the CLI, with no Kubernetes types: client
//! setup (endpoint, region, path-style addressing, credentials, the address policy, timeouts and
//! retries), error classification, multipart uploads, resumable reads and `s3://` URLs.

mod error;
mod multipart;
mod read;
mod retry;
mod url;

pub use error::ServiceFailure;
pub use multipart::{
    HeldPart, MultipartWriter, NewObject, abort_upload, multipart_etag, quoted_md5,
};
pub use read::{
    DEFAULT_READ_FLOOR, ObjectHead, RangeStream, ReadFailure, object_head, object_version,
    read_object, set_read_floor,
};
pub use retry::backoff;
pub use url::{S3Url, S3UrlError};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, IdentityCache, Region, SharedCredentialsProvider};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::address::{AddressPolicy, S3Resolver, UrlRefused};

/// Region used when neither the settings nor the default AWS chain name one.
pub const FALLBACK_REGION: &str = "us-east-1";

/// Static credentials, as read from a Secret. Debug output never shows the secret parts.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    /// The access key id (`AWS_ACCESS_KEY_ID`).
    pub access_key_id: String,
    /// The secret access key (`AWS_SECRET_ACCESS_KEY`); never shown.
    pub secret_access_key: String,
    /// The session token of temporary credentials (`AWS_SESSION_TOKEN`), when there is one.
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

/// How a client signs its requests.
#[derive(Clone, Debug, Default)]
pub enum S3Credentials {
    /// The default AWS chain (environment, IRSA, Pod Identity, instance metadata, ...).
    #[default]
    DefaultChain,
    /// Keys read from a Secret.
    Static(StaticCredentials),
    /// Keys a provider renews as they age (a workload identity, [`crate::identity`]); the client
    /// asks it at every request, and it answers from memory until its keys are due.
    Renewing(SharedCredentialsProvider),
}

/// Where an S3-compatible store is and how to reach it.
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    /// Endpoint URL; `None` is AWS S3 for the region.
    pub endpoint: Option<String>,
    /// Signing region; `None` takes the default chain's, else [`FALLBACK_REGION`].
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket`.
    pub force_path_style: bool,
    /// How requests are signed.
    pub credentials: S3Credentials,
    /// The addresses the client may connect to; `None` (the CLI on the user's own machine): any.
    pub policy: Option<Arc<AddressPolicy>>,
}

/// Why no client can be built for the settings.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The endpoint is not a URL (the endpoint as given, the parse error).
    #[error("endpoint {0:?} is not a URL: {1}")]
    Invalid(String, ::url::ParseError),
    /// The address policy refuses the endpoint (the endpoint as given, why).
    #[error("endpoint {shown}: {1}", shown = crate::redact::text(.0))]
    Refused(String, UrlRefused),
}

/// Connect, first-byte and overall limits of every S3 request. A part of up to 5 GiB is sent
/// before its answer's first byte arrives, which bounds the first-byte wait from below; bodies
/// read as streams have their own stall timeouts where they are read.
fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(600))
        .operation_attempt_timeout(Duration::from_secs(900))
        .operation_timeout(Duration::from_secs(2700))
        .build()
}

/// Most bytes the body of a response other than an object's may hold: a listing page of 1,000
/// keys of 1 KiB each fits.
pub const RESPONSE_BODY_LIMIT: usize = 8 << 20;
/// Most bytes an error response's body may hold (S3's are a few hundred bytes).
pub const ERROR_BODY_LIMIT: usize = 1 << 20;

/// Bounds what the SDK reads of a response: it reads the whole body of every response but a
/// successful GetObject (which the engines read as a stream, within the range they asked for), and
/// of every error. An endpoint a tenant names could otherwise answer with gigabytes the operator
/// would hold in memory; past the bound the request fails.
#[derive(Debug)]
pub(crate) struct BodyLimit;

impl aws_sdk_s3::config::Intercept for BodyLimit {
    fn name(&self) -> &'static str {
        "s3flow-body-limit"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextMut<
            '_,
        >,
        _: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        use aws_smithy_runtime_api::client::orchestrator::Metadata;
        use aws_smithy_types::body::SdkBody;
        let status = context.response().status();
        let streamed = status.is_success()
            && cfg
                .load::<Metadata>()
                .is_some_and(|operation| operation.name() == "GetObject");
        if streamed {
            return Ok(());
        }
        let limit = match status.is_success() {
            true => RESPONSE_BODY_LIMIT,
            false => ERROR_BODY_LIMIT,
        };
        let body = context.response_mut().take_body();
        *context.response_mut().body_mut() =
            body.map(move |body| SdkBody::from_body_1_x(http_body_util::Limited::new(body, limit)));
        Ok(())
    }
}

/// The HTTP client of every S3 and STS request under an address policy: rustls, every address
/// `resolver` returns checked.
pub(crate) fn http_client(resolver: S3Resolver) -> SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_with_resolver(resolver)
}

/// Builds an S3 client for `settings`. With static or renewing credentials, or a region (an endpoint implies
/// one), nothing of the default chain is consulted: no instance metadata service is ever probed
/// for what the settings already say. With a policy, the endpoint and every address the client
/// resolves pass it.
pub async fn client(settings: &S3Settings) -> Result<aws_sdk_s3::Client, EndpointError> {
    if let (Some(endpoint), Some(policy)) = (&settings.endpoint, &settings.policy) {
        let url = ::url::Url::parse(endpoint)
            .map_err(|e| EndpointError::Invalid(crate::redact::text(endpoint).into_owned(), e))?;
        policy
            .check_url(&url)
            .map_err(|refused| EndpointError::Refused(endpoint.clone(), refused))?;
    }
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
    let fixed = |builder: aws_sdk_s3::config::Builder| {
        builder.behavior_version(BehaviorVersion::latest()).region(
            region
                .clone()
                .unwrap_or_else(|| Region::new(FALLBACK_REGION)),
        )
    };
    let mut builder = match &settings.credentials {
        S3Credentials::Static(c) => {
            fixed(aws_sdk_s3::config::Builder::new()).credentials_provider(Credentials::new(
                &c.access_key_id,
                &c.secret_access_key,
                c.session_token.clone(),
                None,
                "s3flow-secret",
            ))
        }
        // The provider keeps and renews its keys itself: an SDK cache in front of it would hold
        // them past the provider's own renewal time.
        S3Credentials::Renewing(provider) => fixed(aws_sdk_s3::config::Builder::new())
            .credentials_provider(provider.clone())
            .identity_cache(IdentityCache::no_cache()),
        S3Credentials::DefaultChain => {
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
    if let Some(policy) = &settings.policy {
        builder = builder.http_client(http_client(S3Resolver(policy.clone())));
    }
    builder = builder
        .interceptor(BodyLimit)
        .timeout_config(timeouts())
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
    Ok(aws_sdk_s3::Client::from_conf(builder.build()))
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
                credentials: S3Credentials::Static(c),
                ..Default::default()
            }
        );
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(!shown.contains("wJalrXUtnFEMI"));
        assert!(!shown.contains("FwoGZXIvYXdzE"));
    }
}
