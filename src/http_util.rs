//! Small helpers shared by the master's and the agent's HTTP handlers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dcos_api::ApiError;

pub fn api_error(error: ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(error)).into_response()
}

pub fn json_ok<T: serde::Serialize>(value: &T) -> Response {
    (StatusCode::OK, Json(value)).into_response()
}

/// Headers of a JSON request body (node-to-node calls).
pub fn json_headers() -> hyper::HeaderMap {
    let mut headers = hyper::HeaderMap::new();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    headers
}

/// Longest wait for a request body that the handler reads itself (after checking who sent
/// it): a caller that trickles its body is cut off.
pub const BODY_READ_TIMEOUT_MS: u64 = 30_000;

/// Reads a request body of at most `limit` bytes within `BODY_READ_TIMEOUT_MS`: 413 when it
/// is larger, 408 when it does not arrive in time.
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let read = tokio::time::timeout(
        std::time::Duration::from_millis(BODY_READ_TIMEOUT_MS),
        axum::body::to_bytes(body, limit),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            408,
            "timeout",
            format!("the request body did not arrive within {BODY_READ_TIMEOUT_MS} ms"),
        )
    })?;
    read.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|inner| inner.is::<http_body_util::LengthLimitError>());
        match too_large {
            true => ApiError::new(
                413,
                "too_large",
                format!("the request body is over the {limit}-byte limit"),
            ),
            false => ApiError::bad_request(format!("reading the request body: {e}")),
        }
    })
}
