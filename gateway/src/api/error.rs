//! The one error shape of the HTTP API: `{"error": {"code", "message"}}`
//! with a status that says whose fault it was.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::deliver::test::TestError;
use crate::fanout::ReplayError;
use crate::plugin::{CallError, LoadError};
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for `Retry-After` on `503`.
    pub retry_after: Option<u64>,
}

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `bad_request`, `unauthorized`, `not_found`,
    /// `conflict`, `payload_too_large`, `unsupported_media_type`,
    /// `unavailable`, `internal`.
    pub code: String,
    /// For people: what was wrong, naming the field or value.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} {id} not found"),
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token (Authorization: Bearer <token>)",
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {limit} bytes"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { kind, id } => ApiError::not_found(kind, &id),
            StoreError::Conflict(message) => ApiError::conflict(message),
            other if other.is_storage() => {
                tracing::error!("storage failure: {other}");
                ApiError::unavailable(format!("storage is failing, nothing was written: {other}"))
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<TestError> for ApiError {
    fn from(e: TestError) -> Self {
        match e {
            TestError::PluginMissing { .. } => ApiError::bad_request(e.to_string()),
            TestError::Store(e) => e.into(),
            TestError::Panicked(_) => ApiError::internal(e.to_string()),
        }
    }
}

impl From<ReplayError> for ApiError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::OtherRepository { .. } | ReplayError::TooMany { .. } => {
                ApiError::bad_request(e.to_string())
            }
            ReplayError::Store(e) => e.into(),
            ReplayError::Panicked(_) => ApiError::internal(e.to_string()),
        }
    }
}

impl From<LoadError> for ApiError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            LoadError::Builtin { .. } => ApiError::conflict(e.to_string()),
            LoadError::Io { .. } | LoadError::Engine(_) => ApiError::internal(e.to_string()),
            _ => ApiError::bad_request(e.to_string()),
        }
    }
}

impl From<CallError> for ApiError {
    /// A configuration the plugin refuses is the user's to fix: `400` with
    /// the plugin's own message.
    fn from(e: CallError) -> Self {
        match e {
            CallError::Returned { message, .. } => ApiError::bad_request(message),
            CallError::Host { .. } => ApiError::internal(e.to_string()),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}
