//! The one error shape every endpoint answers with (`ApiError`), shared by the master, the
//! agent and the CLI, which prints its message.

use dcos_core::FieldError;
use serde::{Deserialize, Serialize};

/// `{"code": "...", "message": "...", "details": {...}}` with an HTTP status beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    #[serde(skip)]
    pub status: u16,
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            code: code.to_string(),
            message: message.into(),
            details: serde_json::Value::Null,
            status,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    /// 422 with every invalid field named in `details.errors`; `what` names the kind of
    /// request (`app definition`, `master`), as in "invalid app definition: cpus: ...".
    pub fn invalid(what: &str, errors: &[FieldError]) -> Self {
        let message = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        Self::new(422, "invalid", format!("invalid {what}: {message}"))
            .with_details(serde_json::json!({ "errors": errors }))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal", message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_serializes_without_status() {
        let e = ApiError::conflict("app /web exists");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"code": "conflict", "message": "app /web exists"})
        );
    }
}
