//! What a resource brings: its Secrets (only those labelled for the use), and the S3 settings of
//! its connection, under the operator's address policy.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::Context;
use super::identity::IdentityError;
use crate::address::UrlRefused;
use crate::api::S3Connection;
use crate::s3::{EndpointError, S3Credentials, S3Settings, StaticCredentials};
use crate::worker::WorkerIdentity;

/// What a Secret is for, as its `s3flow.io/secret-type` label must say: the operator reads no
/// Secret that does not say it is meant for the use a resource names it for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretType {
    /// `credentialsSecretRef`: S3 keys.
    Credentials,
    /// `headersSecretRef`: headers for an ingest's source.
    SourceHeaders,
}

/// Label of a Secret the operator may read; its value is a [`SecretType`].
pub const SECRET_TYPE_LABEL: &str = "s3flow.io/secret-type";

impl SecretType {
    /// The [`SECRET_TYPE_LABEL`] value that marks a Secret for this use.
    pub fn label(self) -> &'static str {
        match self {
            SecretType::Credentials => "credentials",
            SecretType::SourceHeaders => "source-headers",
        }
    }
}

/// Why the inputs of a resource could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The named Secret does not exist in the resource's namespace (reason SecretNotFound).
    #[error("secret {0:?} not found in the resource's namespace")]
    SecretNotFound(String),
    /// The Secret's [`SECRET_TYPE_LABEL`] does not name this use, so it is not read (reason
    /// SecretNotLabelled).
    #[error(
        "secret {name:?} is not labelled for this use: add the label {SECRET_TYPE_LABEL}={} to it (kubectl label secret {name} {SECRET_TYPE_LABEL}={})",
        purpose.label(), purpose.label()
    )]
    SecretNotLabelled {
        /// The Secret's name.
        name: String,
        /// The use the resource names it for: the label value it lacks.
        purpose: SecretType,
    },
    /// No `credentialsSecretRef`, in a namespace the admin does not allow the operator's own AWS
    /// identity (reason CredentialsRequired).
    #[error(
        "credentialsSecretRef is required: the cluster admin allows the operator's own AWS identity in other namespaces only"
    )]
    CredentialsRequired,
    /// The connection's endpoint is not a usable URL (reason InvalidEndpoint) or resolves to an
    /// address the policy refuses (reason ForbiddenAddress).
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The credentials Secret lacks `AWS_ACCESS_KEY_ID` or `AWS_SECRET_ACCESS_KEY` (reason
    /// InvalidSecret).
    #[error("secret {secret:?} has no key {key}")]
    SecretKeyMissing {
        /// The Secret's name.
        secret: String,
        /// The key it lacks.
        key: String,
    },
    /// The CA bundle ConfigMap an ingest names does not exist in its namespace (reason
    /// ConfigMapNotFound).
    #[error("configmap {0:?} not found in the resource's namespace")]
    ConfigMapNotFound(String),
    /// The CA bundle ConfigMap has no such key in its `data` (reason InvalidConfigMap).
    #[error("configmap {name:?} has no key {key}")]
    ConfigMapKeyMissing {
        /// The ConfigMap's name.
        name: String,
        /// The key the ingest names.
        key: String,
    },
    /// An ingest's `partSize` is neither `auto` nor a size such as `16Mi` (reason
    /// InvalidPartSize).
    #[error("partSize: {0}")]
    PartSize(String),
    /// The API server failed a read of a Secret or ConfigMap (reason InputUnreadable).
    #[error("reading an input: {0}")]
    Kube(#[from] kube::Error),
    /// The resource cannot act as its `serviceAccountName` (the reason says why).
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl InputError {
    /// The status condition reason a user sees when this error fails the resource.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SecretNotFound(_) => "SecretNotFound",
            Self::SecretNotLabelled { .. } => "SecretNotLabelled",
            Self::CredentialsRequired => "CredentialsRequired",
            Self::Endpoint(EndpointError::Refused(_, UrlRefused::Address(_))) => "ForbiddenAddress",
            Self::Endpoint(_) => "InvalidEndpoint",
            Self::SecretKeyMissing { .. } => "InvalidSecret",
            Self::ConfigMapNotFound(_) => "ConfigMapNotFound",
            Self::ConfigMapKeyMissing { .. } => "InvalidConfigMap",
            Self::PartSize(_) => "InvalidPartSize",
            Self::Kube(_) => "InputUnreadable",
            Self::Identity(e) => e.reason(),
        }
    }

    /// Whether a later attempt may succeed (an identity provider that did not answer).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Identity(e) if e.is_transient())
    }
}

/// The key-value pairs of Secret `name` in `obj`'s namespace (never logged), when its label says it
/// is meant for `purpose`.
pub async fn secret_data(
    ctx: &Context,
    obj: &impl ResourceExt,
    name: &str,
    purpose: SecretType,
) -> Result<Vec<(String, String)>, InputError> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let secret = api
        .get_opt(name)
        .await?
        .ok_or_else(|| InputError::SecretNotFound(name.into()))?;
    if secret.labels().get(SECRET_TYPE_LABEL).map(String::as_str) != Some(purpose.label()) {
        return Err(InputError::SecretNotLabelled {
            name: name.into(),
            purpose,
        });
    }
    let mut data: Vec<(String, String)> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    data.extend(secret.string_data.unwrap_or_default());
    Ok(data)
}

/// The S3 client of `connection` and, when it acts as a ServiceAccount, the identity its pods get:
/// the keys of its Secret in `obj`'s namespace, the renewing credentials of its ServiceAccount, or
/// the operator's own identity where the admin allows it, under the operator's address policy.
pub async fn s3_access(
    ctx: &Context,
    obj: &impl ResourceExt,
    connection: &S3Connection,
) -> Result<(aws_sdk_s3::Client, Option<WorkerIdentity>), InputError> {
    let namespace = obj.namespace().unwrap_or_default();
    let mut identity = None;
    let credentials = match (
        &connection.credentials_secret_ref,
        &connection.service_account_name,
    ) {
        (Some(secret), _) => {
            let data = secret_data(ctx, obj, &secret.name, SecretType::Credentials).await?;
            let get = |key: &str| data.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            let required = |key: &str| {
                get(key).ok_or_else(|| InputError::SecretKeyMissing {
                    secret: secret.name.clone(),
                    key: key.into(),
                })
            };
            S3Credentials::Static(StaticCredentials {
                access_key_id: required("AWS_ACCESS_KEY_ID")?,
                secret_access_key: required("AWS_SECRET_ACCESS_KEY")?,
                session_token: get("AWS_SESSION_TOKEN"),
            })
        }
        (None, Some(account)) => {
            let (provider, worker) =
                super::identity::credentials(ctx, &namespace, account, connection).await?;
            identity = Some(worker);
            S3Credentials::Renewing(aws_sdk_s3::config::SharedCredentialsProvider::new(provider))
        }
        (None, None) => {
            if !ctx
                .settings
                .default_credentials_namespaces
                .contains(&namespace)
            {
                return Err(InputError::CredentialsRequired);
            }
            S3Credentials::DefaultChain
        }
    };
    let settings = S3Settings {
        endpoint: connection.endpoint.clone(),
        region: connection.region.clone(),
        force_path_style: connection.force_path_style.unwrap_or(false),
        credentials,
        policy: Some(ctx.settings.policy.clone()),
    };
    Ok((crate::s3::client(&settings).await?, identity))
}

/// The S3 client of `connection`, as [`s3_access`] says.
pub async fn s3_client(
    ctx: &Context,
    obj: &impl ResourceExt,
    connection: &S3Connection,
) -> Result<aws_sdk_s3::Client, InputError> {
    Ok(s3_access(ctx, obj, connection).await?.0)
}

/// Attempts of [`s3_client_for_cleanup`].
const CLEANUP_ATTEMPTS: u32 = 3;

/// The S3 client that aborts a deleted resource's uploads, as [`s3_client`] says, asked again a
/// few times when its ServiceAccount is missing (an identity provider that does not answer is
/// already asked again by [`s3_access`]; GitOps
/// deletes a ServiceAccount and the resources acting as it together; the deletion is never held
/// for longer: the caller then says in an Event what is left, and a bucket lifecycle rule is the
/// backstop).
pub async fn s3_client_for_cleanup(
    ctx: &Context,
    obj: &impl ResourceExt,
    connection: &S3Connection,
) -> Result<aws_sdk_s3::Client, InputError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match s3_client(ctx, obj, connection).await {
            Err(InputError::Identity(IdentityError::NotFound(_))) if attempt < CLEANUP_ATTEMPTS => {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            answer => return answer,
        }
    }
}
