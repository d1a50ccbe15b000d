//! Small helpers shared by the master's and the agent's HTTP handlers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dcos_api::ApiError;

/// `host:port` of a URL (`https://10.77.0.21:5051/` -> `10.77.0.21:5051`).
pub fn url_authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

pub fn api_error(error: ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(error)).into_response()
}

/// Largest error body of the framework (axum's own rejections) turned into JSON.
const PLAIN_ERROR_MAX_BYTES: usize = 4096;

/// Middleware: every error answer is the API's JSON error, also those axum makes before a
/// handler runs (an undecodable path segment: plain text; a method the route does not
/// serve: an empty 405), so clients parse one shape.
pub async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, PLAIN_ERROR_MAX_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match (status, text.is_empty()) {
        (StatusCode::METHOD_NOT_ALLOWED, true) => {
            match parts.headers.get(axum::http::header::ALLOW) {
                Some(allow) => format!(
                    "this route does not serve that method (it serves {})",
                    allow.to_str().unwrap_or_default()
                ),
                None => "this route does not serve that method".to_string(),
            }
        }
        (_, true) => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string(),
        (_, false) => text,
    };
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let mut answer = api_error(ApiError::new(status.as_u16(), code, message));
    for (name, value) in parts.headers.iter() {
        if name == axum::http::header::ALLOW || name == axum::http::header::WWW_AUTHENTICATE {
            answer.headers_mut().append(name, value.clone());
        }
    }
    answer
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_urls_authority_is_its_host_and_port() {
        assert_eq!(
            super::url_authority("https://10.77.0.21:5051"),
            "10.77.0.21:5051"
        );
        assert_eq!(
            super::url_authority("http://127.0.0.1:5051/"),
            "127.0.0.1:5051"
        );
        assert_eq!(super::url_authority("10.0.0.1:5051"), "10.0.0.1:5051");
    }
}
