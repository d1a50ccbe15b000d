//! Typed HTTP client for the master's and agents' APIs, used by the CLI and the tests.
//!
//! Every non-2xx answer becomes `ClientError::Api` carrying the server's `ApiError`.

use bytes::Bytes;
use dcos_api::ApiError;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use std::path::Path;
use tokio::io::AsyncWriteExt;

type Body = BoxBody<Bytes, std::io::Error>;

/// Longest wait for a whole request/response (uploads and log streams excepted).
pub const REQUEST_TIMEOUT_MS: u64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Api(ApiError),
    #[error("cannot reach {url} (is `dcos-rs up` running? set --url or DCOS_URL): {reason}")]
    Connect { url: String, reason: String },
    #[error("unexpected answer from {url}: {reason}")]
    Decode { url: String, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{url} did not answer within {REQUEST_TIMEOUT_MS} ms")]
    Timeout { url: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api(e) => Some(e.status),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    base: String,
    http: HttpClient<HttpConnector, Body>,
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed()
}

impl Client {
    pub fn new(base: &str) -> Self {
        Client {
            base: base.trim_end_matches('/').to_string(),
            http: HttpClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// Sends a request; a non-2xx answer is turned into `ClientError::Api`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let url = self.url(path);
        let mut builder = Request::builder().method(method).uri(&url);
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        let request = builder.body(body).map_err(|e| ClientError::Decode {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| ClientError::Connect {
                url: url.clone(),
                reason: error_chain(&e),
            })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut error: ApiError = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            ApiError::new(
                status.as_u16(),
                "http_error",
                format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
            )
        });
        error.status = status.as_u16();
        Err(ClientError::Api(error))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: Option<&str>,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let response = self.send(method, path, body, content_type).await?;
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Decode {
                url: url.clone(),
                reason: e.to_string(),
            })?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url,
            reason: e.to_string(),
        })
    }

    async fn bounded<T>(
        &self,
        path: &str,
        request: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(
            std::time::Duration::from_millis(REQUEST_TIMEOUT_MS),
            request,
        )
        .await
        .map_err(|_| ClientError::Timeout {
            url: self.url(path),
        })?
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.bounded(path, self.json(Method::GET, path, empty(), None))
            .await
    }

    pub async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &[u8],
    ) -> Result<T, ClientError> {
        self.json(method, path, full(body.to_vec()), Some("application/json"))
            .await
    }

    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let response = self.send(Method::GET, path, empty(), None).await?;
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Decode {
                url: self.url(path),
                reason: e.to_string(),
            })?;
        Ok(String::from_utf8_lossy(&bytes.to_bytes()).into_owned())
    }

    /// Streams a file as the request body (no full copy in memory).
    pub async fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        file: &Path,
    ) -> Result<T, ClientError> {
        use futures_util::StreamExt;
        let handle = tokio::fs::File::open(file).await?;
        let stream = tokio_util::io::ReaderStream::new(handle).map(|chunk| chunk.map(Frame::data));
        let body: Body = BodyExt::boxed(StreamBody::new(stream));
        self.json(Method::POST, path, body, Some("application/x-tar"))
            .await
    }

    /// Copies a (possibly endless) response body to `out` as it arrives.
    pub async fn stream_to(
        &self,
        path: &str,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        let mut body = self
            .send(Method::GET, path, empty(), None)
            .await?
            .into_body();
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Decode {
                url: self.url(path),
                reason: e.to_string(),
            })?;
            if let Some(data) = frame.data_ref() {
                out.write_all(data).await?;
                out.flush().await?;
                total += data.len() as u64;
            }
        }
        Ok(total)
    }

    pub async fn status_of(&self, method: Method, path: &str) -> Result<StatusCode, ClientError> {
        match self.send(method, path, empty(), None).await {
            Ok(r) => Ok(r.status()),
            Err(ClientError::Api(e)) => {
                Ok(StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            }
            Err(e) => Err(e),
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.dedup();
    parts.join(": ")
}
