//! The one place that decides what an error means over HTTP.
//!
//! Every error the API can return becomes an [`ApiError`] of one [`ErrorClass`]; the class
//! alone picks the status code, the log level and the `reason` label of
//! `weft_requests_rejected_total`. No handler picks a status code of its own.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::model::{MatcherError, SelectorError, TenantError};
use crate::pressure::MemoryRefusal;
use crate::proto::{ProtoError, SnappyError};
use crate::wal::WalError;

/// What kind of failure, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The request is wrong and retrying it will not help: 400.
    BadData,
    /// The body is over a size limit: 413.
    TooLarge,
    /// Wrong Content-Type or Content-Encoding: 415.
    UnsupportedMedia,
    /// A per-tenant limit (e.g. series) was reached: 429.
    TenantLimit,
    /// weft is busy; retry later: 503 with Retry-After. Never 429, because Prometheus 2.x
    /// drops data on 429 unless `retry_on_http_429` is set.
    Overloaded,
    /// weft cannot serve this now (e.g. not ready): 503 with Retry-After.
    Unavailable,
    /// A bug or an unexpected failure: 500.
    Internal,
}

impl ErrorClass {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorClass::BadData => StatusCode::BAD_REQUEST,
            ErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorClass::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorClass::TenantLimit => StatusCode::TOO_MANY_REQUESTS,
            ErrorClass::Overloaded | ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The Prometheus HTTP API `errorType`.
    pub fn prom_error_type(self) -> &'static str {
        match self {
            ErrorClass::BadData | ErrorClass::TooLarge | ErrorClass::UnsupportedMedia => "bad_data",
            ErrorClass::TenantLimit | ErrorClass::Overloaded | ErrorClass::Unavailable => {
                "unavailable"
            }
            ErrorClass::Internal => "internal",
        }
    }

    /// The `reason` label for request-level rejections.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorClass::BadData => "bad_data",
            ErrorClass::TooLarge => "too_large",
            ErrorClass::UnsupportedMedia => "unsupported_media",
            ErrorClass::TenantLimit => "tenant_limit",
            ErrorClass::Overloaded => "overloaded",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Internal => "internal",
        }
    }

    fn retry_after_seconds(self) -> Option<u32> {
        match self {
            ErrorClass::Overloaded | ErrorClass::Unavailable => Some(5),
            _ => None,
        }
    }
}

/// An error with its class and a short message that says what was wrong and where.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The class.
    pub class: ErrorClass,
    /// The message sent to the client.
    pub message: String,
}

impl ApiError {
    /// An error of `class`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }

    /// A 400.
    pub fn bad_data(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::BadData, message)
    }

    fn log(&self) {
        match self.class {
            ErrorClass::Internal => tracing::error!(class = ?self.class, "{}", self.message),
            // Unavailable is logged where it arises (WAL poisoning, replay); repeating it for
            // every readiness probe or refused push would only bury it.
            // Overload comes in storms (every writer retries): one line a second at most.
            ErrorClass::Overloaded => {
                static LAST: AtomicU64 = AtomicU64::new(0);
                static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                if LAST.swap(now, Ordering::Relaxed) != now {
                    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
                    tracing::warn!(class = ?self.class, suppressed, "{}", self.message);
                } else {
                    SUPPRESSED.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => tracing::debug!(class = ?self.class, "{}", self.message),
        }
    }

    /// Headers every error response carries (Retry-After where it applies).
    fn decorate(&self, resp: &mut Response) {
        if let Some(s) = self.class.retry_after_seconds() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
    }

    /// As a Prometheus HTTP API JSON error.
    pub fn into_prom_json(self) -> Response {
        self.log();
        let body = serde_json::json!({
            "status": "error",
            "errorType": self.class.prom_error_type(),
            "error": self.message,
        });
        let mut resp = (self.class.status(), axum::Json(body)).into_response();
        self.decorate(&mut resp);
        resp
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let mut body = self.message.clone();
        body.push('\n');
        let mut resp = (
            self.class.status(),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response();
        self.decorate(&mut resp);
        resp
    }
}

impl From<WalError> for ApiError {
    fn from(e: WalError) -> Self {
        let class = match e {
            // Space may return; the WAL retries the allocation on the next push.
            WalError::DiskFull { .. } => ErrorClass::Overloaded,
            WalError::RecordTooLarge { .. } => ErrorClass::TooLarge,
            _ => ErrorClass::Unavailable,
        };
        ApiError::new(class, format!("samples not stored durably: {e}"))
    }
}

impl From<SnappyError> for ApiError {
    fn from(e: SnappyError) -> Self {
        let class = match e {
            SnappyError::TooLarge { .. } => ErrorClass::TooLarge,
            _ => ErrorClass::BadData,
        };
        ApiError::new(class, e.to_string())
    }
}

impl From<ProtoError> for ApiError {
    fn from(e: ProtoError) -> Self {
        ApiError::bad_data(e.to_string())
    }
}

impl From<TenantError> for ApiError {
    fn from(e: TenantError) -> Self {
        ApiError::bad_data(format!("invalid X-Scope-OrgID: {e}"))
    }
}

impl From<MatcherError> for ApiError {
    fn from(e: MatcherError) -> Self {
        ApiError::bad_data(e.to_string())
    }
}

impl From<SelectorError> for ApiError {
    fn from(e: SelectorError) -> Self {
        ApiError::bad_data(e.to_string())
    }
}

impl From<MemoryRefusal> for ApiError {
    /// Past the memory limit weft refuses work rather than grow: 503 + Retry-After, for a
    /// push or a read alike (the message names the limit).
    fn from(e: MemoryRefusal) -> Self {
        ApiError::new(ErrorClass::Overloaded, e.to_string())
    }
}
