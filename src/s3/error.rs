//! What an S3 request's failure was: the service's error code (or the address policy's refusal)
//! and a message with its context and no URL query or userinfo. The engines map it to their own
//! errors by code, never by message text.

use std::fmt;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// An S3 request's failure: the service's error code and a message with its context.
#[derive(Debug)]
pub struct ServiceFailure {
    /// S3's error code (`NoSuchKey`, `AccessDenied`, ...), `HTTP <status>` when the answer had no
    /// body (HEAD), empty when no answer came.
    pub code: String,
    /// The answer's HTTP status, when an answer came.
    pub status: Option<u16>,
    /// What failed, with its context; URLs without their query or userinfo.
    pub message: String,
    /// The address policy refused the connection.
    pub forbidden: Option<crate::address::ForbiddenAddress>,
}

impl ServiceFailure {
    /// The failure of an SDK request; `context` says what was being done (`uploading part 3`).
    pub fn of<E>(context: &str, error: SdkError<E, HttpResponse>) -> ServiceFailure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let forbidden = crate::address::ForbiddenAddress::find(&error);
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
        let message = match &forbidden {
            Some(forbidden) => format!("{context}: {forbidden}"),
            None => format!(
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
            ),
        };
        ServiceFailure {
            code,
            status,
            message: crate::redact::text(&message).into_owned(),
            forbidden,
        }
    }

    /// No answer came (the SDK's own retries ran out), or S3 was busy or failing: trying again
    /// later can help.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code.as_str(),
            "" | "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout"
        ) || self.status.is_some_and(|s| s >= 500)
    }

    /// S3 refused the credentials or the request (`AccessDenied`, a bad key or signature).
    pub fn is_access_denied(&self) -> bool {
        matches!(
            self.code.as_str(),
            "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AllAccessDisabled"
        )
    }
}

impl std::error::Error for ServiceFailure {}

impl fmt::Display for ServiceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.code.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{} ({})", self.message, self.code)
        }
    }
}
