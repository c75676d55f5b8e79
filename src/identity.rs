//! Acting as a tenant's workload identity without static keys: a ServiceAccount token exchanged at
//! STS (`AssumeRoleWithWebIdentity`, a call that carries no AWS credentials) for temporary keys,
//! refreshed before they expire. No Kubernetes types: the token comes from a [`TokenSource`] (the
//! operator's TokenRequest, a chunk worker's projected token file).
//!
//! Tokens and keys are never logged, never stored and never shown by `Debug`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials, error::CredentialsError};
use aws_sdk_sts::config::Region;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityError;
use futures::future::BoxFuture;

use crate::address::{AddressPolicy, S3Resolver};

/// Longest a token file may be: a projected ServiceAccount token is about 1 KiB.
const TOKEN_FILE_LIMIT: u64 = 64 << 10;
/// How long one token fetch or STS exchange may take, retries included.
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(60);
/// Credentials this close to their expiry are refreshed whatever the refresh rule says: the S3
/// client must never sign with keys that expire before the request is answered.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Why no credentials could be had for a workload identity.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The token source refused or failed: its condition reason, the message, and whether a
    /// retry may fix it.
    #[error("{message}")]
    Token {
        /// The condition reason (`ServiceAccountNotFound`, `IdentityNotDelegated`, ...).
        reason: &'static str,
        /// What happened, naming the ServiceAccount.
        message: String,
        /// A retry may fix it (the API server was unavailable).
        transient: bool,
    },
    /// STS refused the token for the role (reason AssumeRoleDenied).
    #[error(
        "STS refused to let {subject} assume {role} with audience {audience}: {message} (the role's trust policy or the store's identity settings must name this ServiceAccount and audience)"
    )]
    Denied {
        /// The role asked for.
        role: String,
        /// The token's subject, `system:serviceaccount:<namespace>:<name>`.
        subject: String,
        /// The token's audience.
        audience: String,
        /// STS's message.
        message: String,
    },
    /// STS or its identity provider could not be reached or failed (reason
    /// IdentityProviderUnavailable); retried.
    #[error("STS did not answer: {0}")]
    Unavailable(String),
}

impl ExchangeError {
    /// The status condition reason a user sees.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Token { reason, .. } => reason,
            Self::Denied { .. } => "AssumeRoleDenied",
            Self::Unavailable(_) => "IdentityProviderUnavailable",
        }
    }

    /// Whether a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Token { transient, .. } => *transient,
            Self::Denied { .. } => false,
            Self::Unavailable(_) => true,
        }
    }
}

/// Where a ServiceAccount token comes from. The token is a secret: implementations never log it.
pub trait TokenSource: Send + Sync + 'static {
    /// A fresh token for the identity's audience.
    fn token(&self) -> BoxFuture<'_, Result<String, ExchangeError>>;
}

/// A token the kubelet projects into a pod and rotates: re-read at every exchange.
#[derive(Debug)]
pub struct TokenFile(pub PathBuf);

impl TokenSource for TokenFile {
    fn token(&self) -> BoxFuture<'_, Result<String, ExchangeError>> {
        Box::pin(async move {
            let unreadable = |e: String| ExchangeError::Token {
                reason: "IdentityProviderUnavailable",
                message: format!("token file {}: {e}", self.0.display()),
                transient: true,
            };
            let len = tokio::fs::metadata(&self.0)
                .await
                .map_err(|e| unreadable(e.to_string()))?
                .len();
            if len > TOKEN_FILE_LIMIT {
                return Err(unreadable(format!("{len} bytes, more than a token")));
            }
            let text = tokio::fs::read_to_string(&self.0)
                .await
                .map_err(|e| unreadable(e.to_string()))?;
            Ok(text.trim().to_string())
        })
    }
}

/// Who a token is exchanged for and where: one ServiceAccount's role at one STS.
#[derive(Clone)]
pub struct WebIdentity {
    /// The STS client: no credentials provider, the caller's address policy.
    pub sts: aws_sdk_sts::Client,
    /// The role to assume; `None` where the store maps the token's claims to a policy itself
    /// (MinIO's claim mode).
    pub role_arn: Option<String>,
    /// The session's name in the store's logs ([`session_name`]).
    pub session_name: String,
    /// How long the temporary keys last (STS `DurationSeconds`).
    pub duration: Duration,
    /// The token's subject, for messages.
    pub subject: String,
    /// The token's audience, for messages.
    pub audience: String,
}

impl fmt::Debug for WebIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebIdentity")
            .field("role_arn", &self.role_arn)
            .field("session_name", &self.session_name)
            .field("subject", &self.subject)
            .field("audience", &self.audience)
            .finish()
    }
}

/// An STS client that sends no credentials (`AssumeRoleWithWebIdentity` needs none), so the
/// caller's own AWS identity never enters: the regional AWS STS for `region`, or `endpoint`, every
/// address it resolves passing `policy`.
pub fn sts_client(
    endpoint: Option<&str>,
    region: &str,
    policy: Option<Arc<AddressPolicy>>,
) -> aws_sdk_sts::Client {
    let mut builder = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .timeout_config(
            aws_sdk_sts::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(20))
                .operation_timeout(EXCHANGE_DEADLINE)
                .build(),
        )
        .interceptor(crate::s3::BodyLimit);
    if let Some(policy) = policy {
        builder = builder.http_client(crate::s3::http_client(S3Resolver(policy)));
    }
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_sts::Client::from_conf(builder.build())
}

impl WebIdentity {
    /// Temporary keys for `token`.
    pub async fn exchange(&self, token: &str) -> Result<Credentials, ExchangeError> {
        let answer = self
            .sts
            .assume_role_with_web_identity()
            .set_role_arn(self.role_arn.clone())
            .role_session_name(&self.session_name)
            .web_identity_token(token)
            .duration_seconds(i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| self.classify(e))?;
        let keys = answer
            .credentials
            .ok_or_else(|| ExchangeError::Unavailable("STS answered without credentials".into()))?;
        let expiry = SystemTime::try_from(keys.expiration).ok();
        Ok(Credentials::new(
            keys.access_key_id,
            keys.secret_access_key,
            Some(keys.session_token),
            expiry,
            "s3flow-web-identity",
        ))
    }

    fn classify(&self, error: SdkError<AssumeRoleWithWebIdentityError>) -> ExchangeError {
        let message = crate::redact::message(&error_text(&error));
        let unavailable = match &error {
            SdkError::ServiceError(e) => {
                matches!(
                    e.err(),
                    AssumeRoleWithWebIdentityError::IdpCommunicationErrorException(_)
                ) || e.raw().status().is_server_error()
                    || matches!(e.err().code(), Some("Throttling" | "ThrottlingException"))
            }
            _ => true,
        };
        if unavailable {
            return ExchangeError::Unavailable(message);
        }
        ExchangeError::Denied {
            role: self
                .role_arn
                .clone()
                .unwrap_or_else(|| "the policy of its claims".into()),
            subject: self.subject.clone(),
            audience: self.audience.clone(),
            message,
        }
    }
}

/// An SDK error with its service code and message, or its source chain.
fn error_text<E: ProvideErrorMetadata + std::error::Error + 'static>(
    error: &SdkError<E>,
) -> String {
    if let SdkError::ServiceError(e) = error {
        return format!(
            "{}: {}",
            e.err().code().unwrap_or("error"),
            e.err().message().unwrap_or_default()
        );
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Fetches fresh credentials; [`Refreshing`] decides when.
pub trait FetchCredentials: Send + Sync + 'static {
    /// New temporary keys.
    fn fetch(&self) -> BoxFuture<'_, Result<Credentials, ExchangeError>>;
}

/// Told how each STS exchange ended (the operator counts them).
pub type ExchangeObserver = Arc<dyn Fn(Result<(), &ExchangeError>) + Send + Sync>;

/// A token from its source, exchanged at STS.
pub struct WebIdentityFetch {
    /// Where tokens come from.
    pub tokens: Arc<dyn TokenSource>,
    /// Who they are exchanged for.
    pub identity: WebIdentity,
    /// Told of every exchange, when set.
    pub observer: Option<ExchangeObserver>,
}

impl FetchCredentials for WebIdentityFetch {
    fn fetch(&self) -> BoxFuture<'_, Result<Credentials, ExchangeError>> {
        Box::pin(async move {
            let token = self.tokens.token().await?;
            let answer = self.identity.exchange(&token).await;
            if let Some(observer) = &self.observer {
                observer(answer.as_ref().map(|_| ()));
            }
            answer
        })
    }
}

/// When credentials issued at `issued` and expiring at `expiry` are renewed: at 80% of their
/// lifetime (as the kubelet renews projected tokens), at most `max_age` after issue, and never
/// later than [`EXPIRY_MARGIN`] before they expire.
pub fn refresh_at(issued: SystemTime, expiry: Option<SystemTime>, max_age: Duration) -> SystemTime {
    let Some(expiry) = expiry else {
        return issued + max_age;
    };
    let lifetime = expiry.duration_since(issued).unwrap_or_default();
    let by_rule = issued + lifetime.mul_f64(0.8).min(max_age);
    let latest = expiry.checked_sub(EXPIRY_MARGIN).unwrap_or(issued);
    by_rule.min(latest).max(issued)
}

/// Reads the time; tests pass a fake clock.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

struct Held {
    credentials: Credentials,
    refresh_at: SystemTime,
}

/// After a failed renewal, how long keys that are still good are served before the next try: an
/// STS outage costs one attempt per interval, not one per request.
const RETRY_INTERVAL: Duration = Duration::from_secs(10);

impl Held {
    /// Whether the keys may still sign a request at `now`.
    fn usable(&self, now: SystemTime) -> bool {
        match self.credentials.expiry() {
            Some(expiry) => expiry.checked_sub(EXPIRY_MARGIN).is_some_and(|t| now < t),
            None => now < self.refresh_at,
        }
    }
}

/// Credentials that renew themselves: served from memory until [`refresh_at`], then fetched again
/// once, however many requests wait (the lock is held across the fetch). A failed fetch is not
/// kept. A transfer that outlives many sessions keeps signing with fresh keys. Clones share the
/// credentials.
pub struct Refreshing<F>(Arc<Shared<F>>);

struct Shared<F> {
    fetch: F,
    max_age: Duration,
    clock: Clock,
    held: tokio::sync::Mutex<Option<Held>>,
}

impl<F> Clone for Refreshing<F> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<F> fmt::Debug for Refreshing<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refreshing")
            .field("max_age", &self.0.max_age)
            .finish_non_exhaustive()
    }
}

impl<F: FetchCredentials> Refreshing<F> {
    /// Credentials from `fetch`, kept at most `max_age`.
    pub fn new(fetch: F, max_age: Duration) -> Self {
        Self::with_clock(fetch, max_age, Arc::new(SystemTime::now))
    }

    /// As [`Refreshing::new`], reading the time from `clock`.
    pub fn with_clock(fetch: F, max_age: Duration, clock: Clock) -> Self {
        Self(Arc::new(Shared {
            fetch,
            max_age,
            clock,
            held: tokio::sync::Mutex::new(None),
        }))
    }

    /// The current credentials, fetched when there are none or they are due for renewal.
    pub async fn credentials(&self) -> Result<Credentials, ExchangeError> {
        let this = &self.0;
        let mut held = this.held.lock().await;
        let now = (this.clock)();
        if let Some(h) = held.as_ref().filter(|h| now < h.refresh_at) {
            return Ok(h.credentials.clone());
        }
        let fetched = tokio::time::timeout(EXCHANGE_DEADLINE, this.fetch.fetch())
            .await
            .map_err(|_| {
                ExchangeError::Unavailable(format!(
                    "no credentials within {} s",
                    EXCHANGE_DEADLINE.as_secs()
                ))
            })
            .and_then(|fetched| fetched);
        let credentials = match fetched {
            Ok(credentials) => credentials,
            // A renewal that fails while the keys are still good keeps them a while longer: a
            // long transfer outlives a short STS outage.
            Err(e) => match held.as_mut().filter(|h| e.is_transient() && h.usable(now)) {
                Some(h) => {
                    h.refresh_at = now + RETRY_INTERVAL;
                    return Ok(h.credentials.clone());
                }
                None => {
                    *held = None;
                    return Err(e);
                }
            },
        };
        let refresh = refresh_at(now, credentials.expiry(), this.max_age);
        *held = Some(Held {
            credentials: credentials.clone(),
            refresh_at: refresh,
        });
        Ok(credentials)
    }
}

impl<F: FetchCredentials> ProvideCredentials for Refreshing<F> {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            self.credentials()
                .await
                .map_err(|e| match e.is_transient() {
                    true => CredentialsError::provider_timed_out(EXCHANGE_DEADLINE),
                    false => CredentialsError::provider_error(e),
                })
        })
    }
}

/// The session name STS records for a ServiceAccount: `s3flow.<namespace>.<name>`, in the
/// characters STS allows (`[\w+=,.@-]`, others become `-`), cut to its 64-character limit.
pub fn session_name(namespace: &str, name: &str) -> String {
    format!("s3flow.{namespace}.{name}")
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                true => c,
                false => '-',
            },
        )
        .take(64)
        .collect()
}

/// Whether `arn` names an IAM role: AWS's `arn:<partition>:iam::<12 digits>:role/<path and name>`
/// or MinIO's `arn:minio:iam:<region>::role/<id>`.
pub fn is_role_arn(arn: &str) -> bool {
    let role_name = |name: &str| {
        !name.is_empty()
            && name.len() <= 512
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-/".contains(c))
    };
    if let Some(rest) = arn.strip_prefix("arn:minio:iam:") {
        let Some((region, id)) = rest.split_once("::role/") else {
            return false;
        };
        return !region.contains(':') && role_name(id) && !id.contains('/');
    }
    let Some(rest) = arn.strip_prefix("arn:") else {
        return false;
    };
    let Some((partition, rest)) = rest.split_once(":iam::") else {
        return false;
    };
    let Some((account, name)) = rest.split_once(":role/") else {
        return false;
    };
    partition.starts_with("aws")
        && partition
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '-')
        && account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && role_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn role_arns_of_aws_and_minio_are_accepted_and_others_refused() {
        for (arn, ok) in [
            ("arn:aws:iam::123456789012:role/s3-writer", true),
            ("arn:aws:iam::123456789012:role/team/a/s3-writer", true),
            ("arn:aws-cn:iam::123456789012:role/x", true),
            ("arn:aws-us-gov:iam::123456789012:role/x+=,.@-_", true),
            (
                "arn:minio:iam:us-east-1::role/aj6_gG1B4qU_BLcgWK36meer4kw",
                true,
            ),
            ("arn:minio:iam:::role/abc", true),
            ("arn:aws:iam::12345678901:role/x", false),
            ("arn:aws:iam::123456789012:user/x", false),
            ("arn:aws:iam::123456789012:role/", false),
            ("arn:aws:s3:::bucket", false),
            ("arn:evil:iam::123456789012:role/x", false),
            ("arn:aws:iam::123456789012:role/x y", false),
            ("arn:minio:iam:a:b::role/x", false),
            ("arn:minio:iam:us-east-1::role/a/b", false),
            ("", false),
        ] {
            assert_eq!(is_role_arn(arn), ok, "{arn}");
        }
    }

    #[test]
    fn session_names_keep_sts_characters_and_its_length_limit() {
        assert_eq!(session_name("team-a", "writer"), "s3flow.team-a.writer");
        let long = session_name(&"n".repeat(63), &"s".repeat(253));
        assert_eq!(long.len(), 64);
        assert!(long.starts_with("s3flow.nnn"));
        assert_eq!(session_name("a b", "c/d"), "s3flow.a-b.c-d");
    }

    #[test]
    fn refresh_comes_at_80_percent_capped_and_before_expiry() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        // 1 h keys, 1 h cap: at 48 minutes.
        assert_eq!(
            refresh_at(t0, Some(t0 + hour), hour),
            t0 + Duration::from_secs(2880)
        );
        // The cap wins.
        assert_eq!(
            refresh_at(t0, Some(t0 + hour), Duration::from_secs(30)),
            t0 + Duration::from_secs(30)
        );
        // Short keys: never later than a minute before expiry, never before issue.
        assert_eq!(
            refresh_at(t0, Some(t0 + Duration::from_secs(100)), hour),
            t0 + Duration::from_secs(40)
        );
        assert_eq!(refresh_at(t0, Some(t0), hour), t0);
        // No expiry: the cap.
        assert_eq!(refresh_at(t0, None, hour), t0 + hour);
    }

    /// Counts fetches; fails while `failing` is set; keys last an hour from the fake clock.
    struct Counting {
        fetches: AtomicU64,
        failing: std::sync::atomic::AtomicBool,
        now: Arc<AtomicU64>,
    }

    impl FetchCredentials for Arc<Counting> {
        fn fetch(&self) -> BoxFuture<'_, Result<Credentials, ExchangeError>> {
            Box::pin(async move {
                let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                if self.failing.load(Ordering::SeqCst) {
                    return Err(ExchangeError::Unavailable("down".into()));
                }
                let now =
                    SystemTime::UNIX_EPOCH + Duration::from_secs(self.now.load(Ordering::SeqCst));
                Ok(Credentials::new(
                    format!("AK{n}"),
                    "secret",
                    None,
                    Some(now + Duration::from_secs(3600)),
                    "test",
                ))
            })
        }
    }

    fn refreshing(max_age: u64) -> (Refreshing<Arc<Counting>>, Arc<Counting>) {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let counting = Arc::new(Counting {
            fetches: AtomicU64::new(0),
            failing: Default::default(),
            now: now.clone(),
        });
        let clock: Clock = Arc::new(move || {
            SystemTime::UNIX_EPOCH + Duration::from_secs(now.load(Ordering::SeqCst))
        });
        let provider =
            Refreshing::with_clock(counting.clone(), Duration::from_secs(max_age), clock);
        (provider, counting)
    }

    #[tokio::test]
    async fn fifty_concurrent_callers_cause_one_fetch() {
        let (provider, counting) = refreshing(3600);
        let calls = (0..50).map(|_| {
            let p = provider.clone();
            async move { p.credentials().await.map(|c| c.access_key_id().to_string()) }
        });
        let keys = futures::future::join_all(calls).await;
        assert!(keys.iter().all(|k| k.as_deref().ok() == Some("AK1")));
        assert_eq!(counting.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn credentials_are_renewed_when_due_and_an_outage_is_bridged_while_they_last() {
        let (provider, counting) = refreshing(30);
        let key = |c: Credentials| c.access_key_id().to_string();
        let fetches = || counting.fetches.load(Ordering::SeqCst);
        let advance = |seconds| counting.now.fetch_add(seconds, Ordering::SeqCst);
        assert_eq!(key(provider.credentials().await.unwrap()), "AK1");
        advance(29);
        assert_eq!(key(provider.credentials().await.unwrap()), "AK1");
        assert_eq!(fetches(), 1);
        advance(1);
        assert_eq!(
            key(provider.credentials().await.unwrap()),
            "AK2",
            "renewed when due"
        );
        // STS down at the next renewal: the keys (good for an hour) are served on, and STS is
        // asked again only after the retry interval.
        counting.failing.store(true, Ordering::SeqCst);
        advance(30);
        assert_eq!(key(provider.credentials().await.unwrap()), "AK2");
        assert_eq!(key(provider.credentials().await.unwrap()), "AK2");
        assert_eq!(fetches(), 3, "one try, not one per request");
        advance(10);
        assert_eq!(key(provider.credentials().await.unwrap()), "AK2");
        assert_eq!(fetches(), 4);
        // Past their expiry (less the margin) nothing is served, and a failure is not kept.
        advance(3600);
        let failed = provider.credentials().await.unwrap_err();
        assert_eq!(failed.reason(), "IdentityProviderUnavailable");
        assert!(failed.is_transient());
        counting.failing.store(false, Ordering::SeqCst);
        assert_eq!(key(provider.credentials().await.unwrap()), "AK6");
    }

    #[tokio::test]
    async fn a_token_file_is_read_again_at_every_exchange() {
        let dir = std::env::temp_dir().join(format!("s3flow-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first\n").unwrap();
        let file = TokenFile(path.clone());
        assert_eq!(file.token().await.unwrap(), "first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(file.token().await.unwrap(), "second");
        std::fs::write(&path, vec![b'x'; 100 << 10]).unwrap();
        assert_eq!(
            file.token().await.unwrap_err().reason(),
            "IdentityProviderUnavailable"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
