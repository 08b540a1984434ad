//! The one place that decides what an error means over HTTP.
//!
//! Every error the API can return becomes an [`ApiError`] of one [`ErrorClass`]; the class
//! alone picks the status code, the log level and the `reason` label of
//! `weft_requests_rejected_total`. No handler picks a status code of its own: each module's
//! error enum has one `impl From<…> for ApiError` below, and the matches in them are
//! exhaustive, so a new variant must be classified here before it compiles.

use std::fmt;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::flush::FlushError;
use crate::head::{AppendReport, TooManyTenants};
use crate::ingest::IngestError;
use crate::model::{MatcherError, SelectorError, TenantError};
use crate::pressure::MemoryRefusal;
use crate::pressure::Refusal;
use crate::proto::{ProtoError, SnappyError};
use crate::query::QueryError;
use crate::spill::SpillError;
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
    /// The client sent its body too slowly (`--server.http-body-read-timeout`,
    /// `--server.http-body-min-rate`): 408, and the connection is closed.
    Timeout,
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
            ErrorClass::Timeout => StatusCode::REQUEST_TIMEOUT,
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
            ErrorClass::Timeout => "timeout",
            ErrorClass::Internal => "internal",
        }
    }

    /// The `reason` label for request-level rejections.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorClass::BadData => "bad_data",
            ErrorClass::TooLarge => "too_large",
            ErrorClass::UnsupportedMedia => "unsupported_media",
            ErrorClass::Timeout => "body_timeout",
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
        // The rest of a body that came too slowly is still on its way: the connection cannot
        // carry another request, and saying so spares the client a reset on reuse.
        if self.class == ErrorClass::Timeout {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
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
        let class = match &e {
            // Space may return; the WAL retries the allocation on the next push.
            WalError::DiskFull { .. } => ErrorClass::Overloaded,
            WalError::RecordTooLarge { .. } => ErrorClass::TooLarge,
            // A failed sync poisons the WAL until a restart; an operator must act
            // (`weft_wal_poisoned`), but the client can only retry elsewhere or later.
            WalError::Sync { .. } | WalError::Poisoned | WalError::Closed => {
                ErrorClass::Unavailable
            }
            // Only opening the WAL (replay, configuration) returns these; they are never a
            // request's fault.
            WalError::Io { .. }
            | WalError::Corrupt { .. }
            | WalError::MissingSegment { .. }
            | WalError::CorruptCheckpoint { .. }
            | WalError::Apply(_)
            | WalError::Config(_) => ErrorClass::Unavailable,
        };
        ApiError::new(class, format!("samples not stored durably: {e}"))
    }
}

impl From<SpillError> for ApiError {
    fn from(e: SpillError) -> Self {
        let class = match &e {
            SpillError::DiskFull { .. } => ErrorClass::Overloaded,
            SpillError::Io { .. } | SpillError::Poisoned => ErrorClass::Unavailable,
            SpillError::Corrupt(_)
            | SpillError::UnknownFile(_)
            | SpillError::TooLarge { .. }
            | SpillError::Invalid(_) => ErrorClass::Internal,
        };
        ApiError::new(class, format!("spill: {e}"))
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Wal(e) => e.into(),
            IngestError::SpillSync(e) => e.into(),
        }
    }
}

impl From<Refusal> for ApiError {
    /// A budget refusing pushes is overload: 503 + Retry-After, never 429 (see
    /// [`ErrorClass::Overloaded`]).
    fn from(e: Refusal) -> Self {
        let class = match e {
            Refusal::Disk { .. } | Refusal::Memory(_) => ErrorClass::Overloaded,
        };
        ApiError::new(class, e.to_string())
    }
}

impl From<FlushError> for ApiError {
    /// `POST /ingester/flush` that did not finish: the chunks stay pending, and the store is
    /// what is missing, so 503 + Retry-After.
    fn from(e: FlushError) -> Self {
        let class = match e {
            FlushError::Deadline { .. } | FlushError::Refused(_) => ErrorClass::Unavailable,
        };
        ApiError::new(class, format!("flush incomplete: {e}"))
    }
}

/// The error for a push in which some series were refused (naming the first few), or `None`
/// when every series was taken. The rest of the request is stored either way.
pub(crate) fn append_refusals(r: &AppendReport) -> Option<ApiError> {
    if r.error_count == 0 {
        return None;
    }
    // Prometheus drops a batch answered with a 4xx, which is right: resending cannot fix a
    // bad sample, and a tenant limit is a 429 the operator opts into retrying.
    let class = if r.any_bad_data {
        ErrorClass::BadData
    } else {
        ErrorClass::TenantLimit
    };
    let mut msg = format!(
        "{} series refused ({} samples); {} samples stored",
        r.error_count, r.rejected, r.appended
    );
    for e in &r.errors {
        let _ = write!(msg, "\n{}: series {}", e.error, e.series);
    }
    if r.error_count > r.errors.len() as u64 {
        let _ = write!(
            msg,
            "\n… and {} more",
            r.error_count - r.errors.len() as u64
        );
    }
    Some(ApiError::new(class, msg))
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
        let class = match e {
            ProtoError::TooMany { .. } => ErrorClass::TooLarge,
            _ => ErrorClass::BadData,
        };
        ApiError::new(class, e.to_string())
    }
}

impl From<TooManyTenants> for ApiError {
    fn from(e: TooManyTenants) -> Self {
        ApiError::new(ErrorClass::TenantLimit, e.to_string())
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

impl From<QueryError> for ApiError {
    /// A read too big for its bounds is the client's to narrow (400, as the sample limit
    /// always was: the request itself is small, so not 413); one that does not fit in the
    /// memory limit right now is overload (503 + Retry-After).
    fn from(e: QueryError) -> Self {
        let class = match &e {
            QueryError::TooManyBytes { .. }
            | QueryError::TooManySeries { .. }
            | QueryError::TooManySamples { .. }
            | QueryError::Cancelled => ErrorClass::BadData,
            QueryError::Memory(_) => ErrorClass::Overloaded,
            QueryError::Internal(_) => ErrorClass::Internal,
        };
        ApiError::new(class, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(e: impl Into<ApiError>, status: u16, retry_after: bool) {
        let e: ApiError = e.into();
        let msg = e.message.clone();
        let resp = e.into_response();
        assert_eq!(resp.status().as_u16(), status, "{msg}");
        assert_eq!(
            resp.headers().contains_key(header::RETRY_AFTER),
            retry_after,
            "{msg}"
        );
    }

    fn eio() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::EIO)
    }

    #[test]
    fn module_errors_map_to_one_class_each() {
        let sync = WalError::Sync {
            what: crate::wal::SyncTarget::Dir,
            name: "checkpoint.00000003".into(),
            source: eio(),
        };
        check(IngestError::Wal(sync), 503, true);
        check(IngestError::Wal(WalError::Poisoned), 503, true);
        check(
            IngestError::Wal(WalError::DiskFull {
                segment: "00000001".into(),
            }),
            503,
            true,
        );
        check(
            IngestError::Wal(WalError::RecordTooLarge {
                bytes: 10,
                limit: 1,
            }),
            413,
            false,
        );
        check(IngestError::SpillSync(SpillError::Poisoned), 503, true);
        // Overload is never 429: Prometheus drops data on 429.
        check(Refusal::Disk { used: 2, budget: 1 }, 503, true);
        let memory = crate::pressure::MemoryRefusal {
            consumer: crate::pressure::Consumer::PushBodies,
            requested_bytes: 2,
            used_bytes: 2,
            limit_bytes: 1,
        };
        check(Refusal::Memory(memory.clone()), 503, true);
        check(memory.clone(), 503, true);
        check(QueryError::Memory(memory), 503, true);
        check(QueryError::TooManyBytes { limit_bytes: 1 }, 400, false);
        check(
            FlushError::Deadline {
                after: std::time::Duration::from_secs(1),
                remaining: 3,
                reason: "store down".into(),
            },
            503,
            true,
        );
    }
}
