//! A resource acting as a ServiceAccount of its own namespace (`serviceAccountName`): the admin's
//! settings, the checks of the ServiceAccount, which STS, the TokenRequest, and the cache of
//! renewing credentials. The exchange itself is [`crate::identity`]'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;

use super::Context;
use super::metrics::Metrics;
use crate::api::S3Connection;
use crate::identity::{
    ExchangeError, Refreshing, TokenSource, WebIdentity, WebIdentityFetch, is_role_arn,
    session_name, sts_client,
};
use crate::worker::WorkerIdentity;

/// Label a ServiceAccount must carry before a resource may act as it: set by whoever may write
/// ServiceAccounts, so that creating an S3Ingest never borrows a role its creator cannot use.
pub const IDENTITY_LABEL: &str = "s3flow.io/identity";
/// The role to assume (the IRSA annotation).
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// The token audience the ServiceAccount asks for, honoured only when the admin allows it.
pub const AUDIENCE_ANNOTATION: &str = "eks.amazonaws.com/audience";
/// How long a token the operator requests lasts (the API server's minimum).
const TOKEN_SECONDS: i64 = 600;
/// Namespaces no resource may act from as a ServiceAccount, whatever the settings say.
const SYSTEM_NAMESPACES: [&str; 1] = ["kube-system"];

/// The admin's identity settings (Helm `identity`, passed as JSON in `--identity`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct IdentitySettings {
    /// Whether resources may name a `serviceAccountName` at all.
    pub enabled: bool,
    /// Namespaces whose resources may (never the operator's own or `kube-system`).
    pub namespaces: Vec<String>,
    /// How the operator may request tokens; says which RBAC to name when a TokenRequest is
    /// refused.
    pub rbac: Rbac,
    /// STS `DurationSeconds` of the temporary keys (900 to 43200).
    pub session_duration_seconds: u64,
    /// The credentials cache.
    pub cache: CacheSettings,
    /// Connections without `endpoint` (AWS S3): AWS's regional STS.
    pub aws: AwsSts,
    /// S3-compatible stores with their own STS, by endpoint.
    pub sts: Vec<StsEntry>,
    /// The operator's own namespace (set by the operator, not by the admin).
    #[serde(skip)]
    pub release_namespace: String,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            enabled: false,
            namespaces: vec![],
            rbac: Rbac::Namespaced,
            session_duration_seconds: 3600,
            cache: CacheSettings::default(),
            aws: AwsSts::default(),
            sts: vec![],
            release_namespace: String::new(),
        }
    }
}

/// How the chart lets the operator request ServiceAccount tokens.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Rbac {
    /// A Role in each listed namespace lets it request tokens of any ServiceAccount there.
    #[default]
    Namespaced,
    /// Each namespace's admin delegates ServiceAccounts one by one (`resourceNames`).
    PerServiceAccount,
}

/// How many identities the operator keeps credentials for, and for how long at most.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Identities kept; the least recently used goes first.
    pub max_entries: usize,
    /// Longest credentials are used before renewal (they renew at 80% of their life otherwise):
    /// the most a revoked trust keeps working.
    pub max_duration_seconds: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            max_entries: 1000,
            max_duration_seconds: 3600,
        }
    }
}

/// AWS's STS for connections to AWS S3.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AwsSts {
    /// Whether connections without `endpoint` may act as a ServiceAccount.
    pub enabled: bool,
    /// Audiences a ServiceAccount may ask for; the first is the default.
    pub audiences: Vec<String>,
}

impl Default for AwsSts {
    fn default() -> Self {
        Self {
            enabled: true,
            audiences: vec!["sts.amazonaws.com".into()],
        }
    }
}

/// A store's STS, named by the admin: a tenant can never make the operator send a token to a
/// server of its choosing.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StsEntry {
    /// Connections with this `endpoint`...
    pub s3_endpoint: String,
    /// ...exchange tokens here (MinIO: the same URL).
    pub sts_endpoint: String,
    /// The token audience (MinIO: its OpenID client id).
    pub audience: String,
    /// Whether the ServiceAccount must name a role (MinIO's role-policy mode); MinIO's claim mode
    /// maps the token's subject to a policy itself and needs none.
    #[serde(default = "yes")]
    pub role_arn_required: bool,
}

fn yes() -> bool {
    true
}

/// Why a resource cannot act as its ServiceAccount.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The admin has not enabled identities (reason IdentityNotEnabled).
    #[error(
        "serviceAccountName needs the operator's identity support, which the cluster admin has not enabled (Helm value identity.enabled)"
    )]
    NotEnabled,
    /// The namespace may not use identities (reason IdentityNotAllowed).
    #[error("{0}")]
    NotAllowed(String),
    /// No STS the admin named serves the connection's endpoint (reason
    /// IdentityUnsupportedEndpoint); no token is minted.
    #[error(
        "no STS is configured for endpoint {0}: the cluster admin names the STS of each store whose connections may use serviceAccountName (Helm value identity.sts)"
    )]
    UnsupportedEndpoint(String),
    /// The ServiceAccount does not exist (reason ServiceAccountNotFound).
    #[error("serviceaccount {0:?} not found in the resource's namespace")]
    NotFound(String),
    /// The ServiceAccount lacks [`IDENTITY_LABEL`] (reason ServiceAccountNotLabelled).
    #[error(
        "serviceaccount {0:?} is not labelled for s3flow: someone allowed to edit ServiceAccounts adds the label (kubectl label serviceaccount {0} {IDENTITY_LABEL}=true)"
    )]
    NotLabelled(String),
    /// An annotation of the ServiceAccount is unusable (reason InvalidServiceAccount).
    #[error("serviceaccount {name:?}: {why}")]
    Invalid {
        /// The ServiceAccount.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// The ServiceAccount names no role for AWS: EKS Pod Identity, which the operator cannot use
    /// (reason IdentityUnsupported).
    #[error(
        "serviceaccount {0:?} has no {ROLE_ARN_ANNOTATION} annotation: EKS Pod Identity credentials are handed only to pods running as the ServiceAccount, never to the operator; annotate it with an IAM role the ServiceAccount's token may assume (IRSA)"
    )]
    PodIdentityOnly(String),
    /// The operator may not do what acting as the ServiceAccount needs (reason
    /// IdentityNotDelegated).
    #[error("{0}")]
    NotDelegated(String),
    /// The token or the STS exchange failed.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

impl IdentityError {
    /// The status condition reason a user sees.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotEnabled => "IdentityNotEnabled",
            Self::NotAllowed(_) => "IdentityNotAllowed",
            Self::UnsupportedEndpoint(_) => "IdentityUnsupportedEndpoint",
            Self::NotFound(_) => "ServiceAccountNotFound",
            Self::NotLabelled(_) => "ServiceAccountNotLabelled",
            Self::Invalid { .. } => "InvalidServiceAccount",
            Self::PodIdentityOnly(_) => "IdentityUnsupported",
            Self::NotDelegated(_) => "IdentityNotDelegated",
            Self::Exchange(e) => e.reason(),
        }
    }

    /// Whether a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Exchange(e) if e.is_transient())
    }
}

/// The STS a connection's tokens go to, as the admin's settings say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChosenSts {
    /// `None`: AWS's regional STS.
    pub endpoint: Option<String>,
    /// The region of the call.
    pub region: String,
    /// Audiences allowed; the first is the default.
    pub audiences: Vec<String>,
    /// Whether the ServiceAccount must name a role.
    pub role_arn_required: bool,
}

/// Whether resources of `namespace` may act as a ServiceAccount.
pub fn check_namespace(settings: &IdentitySettings, namespace: &str) -> Result<(), IdentityError> {
    if !settings.enabled {
        return Err(IdentityError::NotEnabled);
    }
    if namespace == settings.release_namespace || SYSTEM_NAMESPACES.contains(&namespace) {
        return Err(IdentityError::NotAllowed(format!(
            "resources in namespace {namespace} may not act as a ServiceAccount: it is the operator's own or a system namespace"
        )));
    }
    if !settings.namespaces.iter().any(|n| n == namespace) {
        return Err(IdentityError::NotAllowed(format!(
            "namespace {namespace} is not one the cluster admin allows to use serviceAccountName (Helm value identity.namespaces)"
        )));
    }
    Ok(())
}

/// An endpoint as compared with the admin's list: without a trailing `/`.
fn normalized(endpoint: &str) -> &str {
    endpoint.trim_end_matches('/')
}

/// The STS of `connection`: AWS's regional one for AWS S3, else the admin's entry for its
/// endpoint.
pub fn choose_sts(
    settings: &IdentitySettings,
    connection: &S3Connection,
) -> Result<ChosenSts, IdentityError> {
    let region = connection
        .region
        .clone()
        .unwrap_or_else(|| crate::s3::FALLBACK_REGION.into());
    match &connection.endpoint {
        None if settings.aws.enabled && !settings.aws.audiences.is_empty() => Ok(ChosenSts {
            endpoint: None,
            region,
            audiences: settings.aws.audiences.clone(),
            role_arn_required: true,
        }),
        None => Err(IdentityError::UnsupportedEndpoint("AWS S3".into())),
        Some(endpoint) => settings
            .sts
            .iter()
            .find(|entry| normalized(&entry.s3_endpoint) == normalized(endpoint))
            .map(|entry| ChosenSts {
                endpoint: Some(entry.sts_endpoint.clone()),
                region,
                audiences: vec![entry.audience.clone()],
                role_arn_required: entry.role_arn_required,
            })
            .ok_or_else(|| {
                IdentityError::UnsupportedEndpoint(crate::redact::text(endpoint).into_owned())
            }),
    }
}

/// What a labelled ServiceAccount says: its uid, the role and the audience.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// The ServiceAccount's uid: a recreated one is another identity.
    pub uid: String,
    /// The role to assume.
    pub role_arn: Option<String>,
    /// The token audience.
    pub audience: String,
}

/// Checks `account` against the contract (label, role, audience) for `sts`.
pub fn check_service_account(
    account: &ServiceAccount,
    sts: &ChosenSts,
) -> Result<Subject, IdentityError> {
    let name = account.name_any();
    if account.labels().get(IDENTITY_LABEL).map(String::as_str) != Some("true") {
        return Err(IdentityError::NotLabelled(name));
    }
    let annotations = account.annotations();
    let invalid = |why: String| IdentityError::Invalid {
        name: name.clone(),
        why,
    };
    let role_arn = match annotations.get(ROLE_ARN_ANNOTATION) {
        Some(arn) if is_role_arn(arn) => Some(arn.clone()),
        Some(arn) => {
            return Err(invalid(format!(
                "{ROLE_ARN_ANNOTATION} {:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name> or arn:minio:iam:<region>::role/<id>)",
                crate::redact::cut(arn, 200)
            )));
        }
        None if sts.endpoint.is_none() => return Err(IdentityError::PodIdentityOnly(name)),
        None if sts.role_arn_required => {
            return Err(invalid(format!(
                "the store's STS needs a role: annotate it with {ROLE_ARN_ANNOTATION}"
            )));
        }
        None => None,
    };
    let audience = match annotations.get(AUDIENCE_ANNOTATION) {
        None => sts.audiences.first().cloned().unwrap_or_default(),
        Some(audience) if sts.audiences.contains(audience) => audience.clone(),
        Some(audience) => {
            return Err(invalid(format!(
                "audience {:?} is not one the cluster admin allows for this store",
                crate::redact::cut(audience, 200)
            )));
        }
    };
    Ok(Subject {
        uid: account.uid().unwrap_or_default(),
        role_arn,
        audience,
    })
}

/// Tokens of one ServiceAccount from the TokenRequest API, never logged or kept.
struct Tokens {
    client: Client,
    namespace: String,
    name: String,
    audience: String,
    rbac: Rbac,
    metrics: Arc<Metrics>,
}

impl Tokens {
    /// What the namespace's admin adds when the operator may not mint tokens.
    fn delegation_hint(&self) -> String {
        let Self {
            namespace, name, ..
        } = self;
        match self.rbac {
            Rbac::PerServiceAccount => format!(
                "the operator may not request tokens for serviceaccount {namespace}/{name}: the namespace's admin delegates it with a Role granting create on serviceaccounts/token with resourceNames [{name}], bound to the operator's ServiceAccount (see the README, Identity)"
            ),
            Rbac::Namespaced => format!(
                "the operator may not request tokens in namespace {namespace}: the cluster admin lists it in the Helm value identity.namespaces, which grants the Role"
            ),
        }
    }
}

impl TokenSource for Tokens {
    fn token(&self) -> BoxFuture<'_, Result<String, ExchangeError>> {
        Box::pin(async move {
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![self.audience.clone()],
                    expiration_seconds: Some(TOKEN_SECONDS),
                    bound_object_ref: None,
                },
                ..Default::default()
            };
            let answer = api
                .create_token_request(&self.name, &PostParams::default(), &request)
                .await;
            let refused = |reason: &'static str, message: String, transient: bool| {
                self.metrics.token_requested(reason);
                ExchangeError::Token {
                    reason,
                    message,
                    transient,
                }
            };
            match answer {
                Ok(answer) => match answer.status {
                    Some(status) if !status.token.is_empty() => {
                        self.metrics.token_requested("ok");
                        Ok(status.token)
                    }
                    _ => Err(refused(
                        "IdentityProviderUnavailable",
                        "the API server answered a TokenRequest without a token".into(),
                        true,
                    )),
                },
                Err(kube::Error::Api(status)) if status.code == 403 => Err(refused(
                    "IdentityNotDelegated",
                    self.delegation_hint(),
                    false,
                )),
                Err(kube::Error::Api(status)) if status.code == 404 => Err(refused(
                    "ServiceAccountNotFound",
                    format!("serviceaccount {:?} not found", self.name),
                    false,
                )),
                Err(e) => Err(refused(
                    "IdentityProviderUnavailable",
                    format!("requesting a token: {e}"),
                    true,
                )),
            }
        })
    }
}

/// Everything an identity's credentials depend on: any change is another entry.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct CacheKey {
    namespace: String,
    name: String,
    uid: String,
    role_arn: Option<String>,
    audience: String,
    sts_endpoint: Option<String>,
    region: String,
    session_seconds: u64,
}

/// What is held for the identities in use (their renewing credentials), bounded in count.
pub struct IdentityCache<V = Refreshing<WebIdentityFetch>> {
    entries: Mutex<HashMap<CacheKey, (V, Instant)>>,
}

impl<V> Default for IdentityCache<V> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<V: Clone> IdentityCache<V> {
    /// The entry of `key` and whether it was held, made by `make` when it was not; an entry of
    /// the same ServiceAccount with other inputs (a changed role, a recreated account) is
    /// dropped, and the least recently used goes when `max` are held.
    fn entry(&self, key: CacheKey, max: usize, make: impl FnOnce() -> V) -> (V, bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((value, used)) = entries.get_mut(&key) {
            *used = Instant::now();
            return (value.clone(), true);
        }
        entries.retain(|k, _| k.namespace != key.namespace || k.name != key.name);
        while entries.len() >= max.max(1) {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            entries.remove(&oldest);
        }
        let value = make();
        entries.insert(key, (value.clone(), Instant::now()));
        (value, false)
    }

    /// Drops what is held for ServiceAccount `namespace/name` (it lost its label or is gone).
    fn forget(&self, namespace: &str, name: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|k, _| k.namespace != namespace || k.name != name);
    }

    /// How many identities are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// How many times an unavailable identity provider is asked again within one reconcile.
const ATTEMPTS: u32 = 3;

/// Renewing credentials of ServiceAccount `name` of `namespace` for `connection`, checked against
/// the admin's settings and the ServiceAccount's contract before any token is minted, and the
/// identity the connection's pods get. Fetches the first keys now, so that a refusal becomes the
/// resource's condition rather than a failed request later.
pub async fn credentials(
    ctx: &Context,
    namespace: &str,
    name: &str,
    connection: &S3Connection,
) -> Result<(Refreshing<WebIdentityFetch>, WorkerIdentity), IdentityError> {
    let settings = &ctx.settings.identity;
    check_namespace(settings, namespace)?;
    let sts = choose_sts(settings, connection)?;
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    let account = match api.get_opt(name).await {
        Ok(Some(account)) => account,
        Ok(None) => {
            ctx.identities.forget(namespace, name);
            return Err(IdentityError::NotFound(name.into()));
        }
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Err(IdentityError::NotDelegated(format!(
                "the operator may not read serviceaccounts in namespace {namespace}: the cluster admin lists it in the Helm value identity.namespaces, which grants the Role"
            )));
        }
        Err(e) => {
            return Err(ExchangeError::Token {
                reason: "IdentityProviderUnavailable",
                message: format!("reading serviceaccount {name:?}: {e}"),
                transient: true,
            }
            .into());
        }
    };
    let subject = match check_service_account(&account, &sts) {
        Ok(subject) => subject,
        Err(e) => {
            ctx.identities.forget(namespace, name);
            return Err(e);
        }
    };
    let session = session_name(namespace, name);
    let duration = settings.session_duration_seconds;
    let key = CacheKey {
        namespace: namespace.into(),
        name: name.into(),
        uid: subject.uid.clone(),
        role_arn: subject.role_arn.clone(),
        audience: subject.audience.clone(),
        sts_endpoint: sts.endpoint.clone(),
        region: sts.region.clone(),
        session_seconds: duration,
    };
    let make = || {
        let metrics = ctx.metrics.clone();
        let fetch = WebIdentityFetch {
            tokens: Arc::new(Tokens {
                client: ctx.client.clone(),
                namespace: namespace.into(),
                name: name.into(),
                audience: subject.audience.clone(),
                rbac: settings.rbac,
                metrics: ctx.metrics.clone(),
            }),
            observer: Some(Arc::new(move |answer| {
                metrics.sts_requested(answer.map_or_else(|e| e.reason(), |()| "ok"));
            })),
            identity: WebIdentity {
                sts: sts_client(
                    sts.endpoint.as_deref(),
                    &sts.region,
                    Some(ctx.settings.policy.clone()),
                ),
                role_arn: subject.role_arn.clone(),
                session_name: session.clone(),
                duration: Duration::from_secs(duration),
                subject: format!("system:serviceaccount:{namespace}:{name}"),
                audience: subject.audience.clone(),
            },
        };
        Refreshing::new(
            fetch,
            Duration::from_secs(settings.cache.max_duration_seconds),
        )
    };
    let (provider, held) = ctx.identities.entry(key, settings.cache.max_entries, make);
    if held {
        ctx.metrics.identity_cache_hit();
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match provider.credentials().await {
            Ok(_) => break,
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let worker = WorkerIdentity {
        service_account: name.into(),
        audience: subject.audience,
        role_arn: subject.role_arn,
        sts_endpoint: sts.endpoint,
        region: sts.region,
        session_name: session,
        duration_seconds: duration,
    };
    Ok((provider, worker))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> IdentitySettings {
        serde_json::from_value::<IdentitySettings>(json!({
            "enabled": true,
            "namespaces": ["team-a", "s3flow-system", "kube-system"],
            "sts": [{"s3Endpoint": "http://minio.storage:9000/", "stsEndpoint": "http://sts.storage:9000",
                     "audience": "sts.min.io", "roleArnRequired": false}],
        }))
        .map(|mut s| {
            s.release_namespace = "s3flow-system".into();
            s
        })
        .unwrap()
    }

    fn connection(endpoint: Option<&str>) -> S3Connection {
        S3Connection {
            endpoint: endpoint.map(Into::into),
            region: Some("eu-west-1".into()),
            ..Default::default()
        }
    }

    fn account(labels: serde_json::Value, annotations: serde_json::Value) -> ServiceAccount {
        serde_json::from_value(json!({
            "metadata": {"name": "writer", "namespace": "team-a", "uid": "u-1",
                         "labels": labels, "annotations": annotations}
        }))
        .unwrap()
    }

    #[test]
    fn only_listed_namespaces_may_act_never_the_operators_or_the_systems() {
        let s = settings();
        assert!(check_namespace(&s, "team-a").is_ok());
        for (ns, reason) in [
            ("team-b", "IdentityNotAllowed"),
            ("s3flow-system", "IdentityNotAllowed"),
            ("kube-system", "IdentityNotAllowed"),
        ] {
            assert_eq!(
                check_namespace(&s, ns).unwrap_err().reason(),
                reason,
                "{ns}"
            );
        }
        let off = IdentitySettings::default();
        assert_eq!(
            check_namespace(&off, "team-a").unwrap_err().reason(),
            "IdentityNotEnabled"
        );
    }

    #[test]
    fn tokens_go_only_to_aws_or_an_sts_the_admin_listed() {
        let s = settings();
        let aws = choose_sts(&s, &connection(None)).unwrap();
        assert_eq!(aws.endpoint, None);
        assert_eq!(aws.region, "eu-west-1");
        assert_eq!(aws.audiences, ["sts.amazonaws.com"]);
        let minio = choose_sts(&s, &connection(Some("http://minio.storage:9000"))).unwrap();
        assert_eq!(minio.endpoint.as_deref(), Some("http://sts.storage:9000"));
        assert_eq!(minio.audiences, ["sts.min.io"]);
        assert!(!minio.role_arn_required);
        let other = choose_sts(&s, &connection(Some("http://attacker.example:9000")));
        assert_eq!(other.unwrap_err().reason(), "IdentityUnsupportedEndpoint");
        let mut no_aws = settings();
        no_aws.aws.enabled = false;
        assert_eq!(
            choose_sts(&no_aws, &connection(None)).unwrap_err().reason(),
            "IdentityUnsupportedEndpoint"
        );
    }

    #[test]
    fn the_service_account_contract() {
        let s = settings();
        let aws = choose_sts(&s, &connection(None)).unwrap();
        let minio = choose_sts(&s, &connection(Some("http://minio.storage:9000"))).unwrap();
        let labelled = json!({IDENTITY_LABEL: "true"});
        let role = "arn:aws:iam::123456789012:role/writer";
        let subject = check_service_account(
            &account(labelled.clone(), json!({ROLE_ARN_ANNOTATION: role})),
            &aws,
        )
        .unwrap();
        assert_eq!(
            subject,
            Subject {
                uid: "u-1".into(),
                role_arn: Some(role.into()),
                audience: "sts.amazonaws.com".into()
            }
        );
        let cases = [
            (
                json!({}),
                json!({ROLE_ARN_ANNOTATION: role}),
                &aws,
                "ServiceAccountNotLabelled",
            ),
            (
                json!({IDENTITY_LABEL: "yes"}),
                json!({ROLE_ARN_ANNOTATION: role}),
                &aws,
                "ServiceAccountNotLabelled",
            ),
            (
                labelled.clone(),
                json!({ROLE_ARN_ANNOTATION: "admin"}),
                &aws,
                "InvalidServiceAccount",
            ),
            (labelled.clone(), json!({}), &aws, "IdentityUnsupported"),
            (
                labelled.clone(),
                json!({ROLE_ARN_ANNOTATION: role, AUDIENCE_ANNOTATION: "https://kubernetes.default.svc"}),
                &aws,
                "InvalidServiceAccount",
            ),
            (
                labelled.clone(),
                json!({ROLE_ARN_ANNOTATION: role, AUDIENCE_ANNOTATION: "sts.amazonaws.com"}),
                &minio,
                "InvalidServiceAccount",
            ),
        ];
        for (labels, annotations, sts, reason) in cases {
            let refused = check_service_account(&account(labels, annotations.clone()), sts);
            assert_eq!(refused.unwrap_err().reason(), reason, "{annotations}");
        }
        // MinIO's claim mode: no role needed.
        let claim = check_service_account(&account(labelled, json!({})), &minio).unwrap();
        assert_eq!(claim.role_arn, None);
        assert_eq!(claim.audience, "sts.min.io");
    }

    fn key(name: &str, uid: &str, role: &str) -> CacheKey {
        CacheKey {
            namespace: "team-a".into(),
            name: name.into(),
            uid: uid.into(),
            role_arn: Some(role.into()),
            audience: "sts.amazonaws.com".into(),
            sts_endpoint: None,
            region: "us-east-1".into(),
            session_seconds: 3600,
        }
    }

    #[test]
    fn the_cache_key_covers_every_input_and_the_count_is_bounded() {
        let cache = IdentityCache::<u32>::default();
        let mut made = 0;
        let mut get = |k: CacheKey| {
            cache.entry(k, 3, || {
                made += 1;
                made
            })
        };
        assert_eq!(get(key("writer", "u1", "r1")), (1, false));
        assert_eq!(get(key("writer", "u1", "r1")), (1, true));
        // Recreated (new uid), then another role: new entries, the old one dropped.
        assert_eq!(get(key("writer", "u2", "r1")), (2, false));
        assert_eq!(get(key("writer", "u2", "r2")), (3, false));
        assert_eq!(get(key("writer", "u1", "r1")), (4, false));
        assert_eq!(cache.len(), 1);
        assert!(!get(key("b", "u", "r")).1);
        assert!(!get(key("c", "u", "r")).1);
        assert!(!get(key("d", "u", "r")).1);
        assert_eq!(cache.len(), 3, "bounded");
        // The least recently used (writer) went.
        assert!(!get(key("writer", "u1", "r1")).1);
        cache.forget("team-a", "writer");
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_helm_values_shape_parses_and_unknown_keys_are_refused() {
        let parsed: IdentitySettings = serde_json::from_value(json!({
            "enabled": true, "namespaces": ["a"], "rbac": "perServiceAccount",
            "sessionDurationSeconds": 900, "cache": {"maxEntries": 5, "maxDurationSeconds": 30},
            "aws": {"enabled": false, "audiences": []}, "sts": []
        }))
        .unwrap();
        assert_eq!(parsed.cache.max_entries, 5);
        assert_eq!(parsed.rbac, Rbac::PerServiceAccount);
        assert!(serde_json::from_value::<IdentitySettings>(json!({"enable": true})).is_err());
    }
}
