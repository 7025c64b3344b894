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
    pub fn forbidden(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::FORBIDDEN, message)
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

/// Most bytes of a plain-text error body rewrapped by [`json_errors`].
const MAX_PLAIN_ERROR: usize = 4096;

/// Middleware: every 4xx/5xx answer is `{"message": "..."}` JSON, as CircleCI's. Handlers answer
/// [`AppError`] already; what is left are axum's own answers, plain text or empty: a request
/// body that is not JSON or not the expected shape (400/415/422), a bad query string, a path
/// with no route (404, see [`no_route`]), or a method the path does not take (405, whose
/// `Allow` header is kept). Their text says what was wrong with the request, never anything of
/// the server's.
pub async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_PLAIN_ERROR).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        let allowed = parts
            .headers
            .get(axum::http::header::ALLOW)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        format!("{path} does not take {method} (it takes {allowed})")
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut answer = AppError::new(status, message).into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    // This runs outside the routes, which are what set a length from an exact body size: set
    // it here, so the answer is not chunked.
    use axum::body::HttpBody as _;
    if let Some(length) = answer.body().size_hint().exact() {
        answer
            .headers_mut()
            .insert(axum::http::header::CONTENT_LENGTH, length.into());
    }
    answer
}

/// The router's fallback: a path no route matches.
pub async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> AppError {
    AppError::not_found(format!("there is no route {method} {}", uri.path()))
}
