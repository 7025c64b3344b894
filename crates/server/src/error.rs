//! Errors answered as CircleCI does: a status and `{"message": "..."}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error a handler answers with.
#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub message: String,
}

impl AppError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> AppError {
        AppError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::CONFLICT, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::UNAUTHORIZED, message)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "message": self.message })),
        )
            .into_response()
    }
}

/// Store failures go to the server's log; the client learns only that the database failed.
impl From<crate::store::StoreError> for AppError {
    fn from(err: crate::store::StoreError) -> AppError {
        tracing::error!("{err}");
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal database error")
    }
}

/// Internal failures carry paths, SQL and OS errors meant for the operator: they go to the
/// server's log, and the client learns only that something broke on the server's side.
impl From<anyhow::Error> for AppError {
    fn from(err: anyhow::Error) -> AppError {
        tracing::error!("internal error: {err:#}");
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error (the server's log has the details)",
        )
    }
}

pub type AppResult<T> = Result<T, AppError>;
