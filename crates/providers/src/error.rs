use std::time::Duration;

use bytes::Bytes;
use switchyard_api::{ApiError, ErrorKind};

/// Why an attempt failed. The kind decides whether the gateway tries the next target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderErrorKind {
    /// The provider answered with an HTTP error status.
    Status(u16),
    /// No connection could be made.
    Connect,
    /// The provider did not answer (or stopped answering) in time.
    Timeout,
    /// The connection broke or the body could not be read.
    Io,
    /// The provider's answer was not in the shape its API documents.
    Protocol,
    /// The provider cannot do what was asked (no embeddings, no such feature).
    Unsupported,
    /// The request cannot be sent to this provider as it is (a client error we detected).
    InvalidRequest,
}

/// A failed attempt. `message` never holds credentials.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub kind: ProviderErrorKind,
    pub message: String,
    /// The provider's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
    /// The provider's error body, relayed to the client for client errors (4xx other than 429).
    pub body: Option<Bytes>,
}

impl ProviderError {
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            message: message.into(),
            retry_after: None,
            body: None,
        }
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Unsupported, message)
    }

    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Protocol, message)
    }

    pub fn status(&self) -> Option<u16> {
        match self.kind {
            ProviderErrorKind::Status(s) => Some(s),
            _ => None,
        }
    }

    /// Whether another attempt (same or next target) may succeed: 408, 409, 429, 5xx,
    /// timeouts and broken connections. Other 4xx are the client's fault and fail fast.
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            ProviderErrorKind::Status(s) => s == 408 || s == 409 || s == 429 || s >= 500,
            ProviderErrorKind::Connect | ProviderErrorKind::Timeout | ProviderErrorKind::Io => true,
            ProviderErrorKind::Protocol => true,
            ProviderErrorKind::Unsupported | ProviderErrorKind::InvalidRequest => false,
        }
    }

    /// Short stable name for the ledger and the `error.type` metric attribute.
    pub fn type_name(&self) -> String {
        match self.kind {
            ProviderErrorKind::Status(s) => format!("http_{s}"),
            ProviderErrorKind::Connect => "connect".into(),
            ProviderErrorKind::Timeout => "timeout".into(),
            ProviderErrorKind::Io => "io".into(),
            ProviderErrorKind::Protocol => "protocol".into(),
            ProviderErrorKind::Unsupported => "unsupported".into(),
            ProviderErrorKind::InvalidRequest => "invalid_request".into(),
        }
    }

    /// The error a client sees when this was the last attempt.
    pub fn to_api_error(&self) -> ApiError {
        let kind = match self.kind {
            ProviderErrorKind::Status(429) => ErrorKind::RateLimited,
            ProviderErrorKind::Status(400) | ProviderErrorKind::Status(422) => {
                ErrorKind::InvalidRequest
            }
            ProviderErrorKind::Status(401) | ProviderErrorKind::Status(403) => {
                ErrorKind::BadGateway
            }
            ProviderErrorKind::Status(404) => ErrorKind::NotFound,
            ProviderErrorKind::Status(413) => ErrorKind::PayloadTooLarge,
            ProviderErrorKind::Status(503) => ErrorKind::Unavailable,
            ProviderErrorKind::Status(504) | ProviderErrorKind::Timeout => ErrorKind::Timeout,
            ProviderErrorKind::Status(_) => ErrorKind::BadGateway,
            ProviderErrorKind::Connect | ProviderErrorKind::Io | ProviderErrorKind::Protocol => {
                ErrorKind::BadGateway
            }
            ProviderErrorKind::Unsupported => ErrorKind::NotFound,
            ProviderErrorKind::InvalidRequest => ErrorKind::InvalidRequest,
        };
        ApiError::new(kind, self.message.clone())
            .with_retry_after(self.retry_after.map(|d| d.as_secs().max(1)))
    }
}

/// Parses `Retry-After` (seconds or an HTTP date, RFC 9110 §10.2.3) and OpenAI's
/// `retry-after-ms` header.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_millis(ms as u64));
        }
    }
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_ms_and_dates() {
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut h = http::HeaderMap::new();
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        h.insert(
            "retry-after",
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
    }

    #[test]
    fn client_errors_are_not_retried() {
        assert!(!ProviderError::new(ProviderErrorKind::Status(400), "x").is_retryable());
        assert!(ProviderError::new(ProviderErrorKind::Status(429), "x").is_retryable());
        assert!(ProviderError::new(ProviderErrorKind::Status(503), "x").is_retryable());
        assert!(ProviderError::new(ProviderErrorKind::Timeout, "x").is_retryable());
    }
}
