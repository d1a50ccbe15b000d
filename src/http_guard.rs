//! What a browser could be made to send: checks every API request passes before auth and
//! before any handler, against DNS rebinding and cross-site requests.
//!
//! - `Host` must be one of the server's own names when the server knows them (`dcos-rs up`
//!   on loopback: `127.0.0.1`, `localhost`, `[::1]` and the listener's address, with its
//!   port). A page on `evil.example` whose name was re-pointed to 127.0.0.1 sends its own
//!   name and is refused.
//! - `Origin`, when a browser sends one, must be the origin of the `Host` asked for:
//!   another site's page may not drive the API (there is no CORS here, on purpose).
//! - `POST`, `PUT` and `PATCH` must say `Content-Type: application/json` (the agent's image
//!   upload: a tar or binary type). A plain HTML form or a "simple" `fetch` cannot send that
//!   without a preflight nobody answers. Actions without a body and without a type, as their
//!   clients send them, are the exceptions: Marathon's restart (`POST .../restart`, the
//!   DC/OS CLI), Chronos's run-now (`PUT .../scheduler/job/{name}`, chronos-python) and
//!   Metronome's run and stop (`POST /v1/jobs/{id}/runs`, `.../actions/stop`). Mesos's
//!   `POST /master/teardown` takes its form (`frameworkId=...`) when the request carries
//!   `Authorization`, which an HTML form cannot. Routes under `/internal/` (certificate-only,
//!   between nodes) are not checked for it.

use crate::http_util::api_error;
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use dcos_api::ApiError;
use std::net::SocketAddr;
use std::sync::Arc;

/// The media types of an upload of image tarballs (the agent's `POST /images`).
pub const UPLOAD_TYPES: &[&str] = &[
    "application/x-tar",
    "application/octet-stream",
    "application/gzip",
];

#[derive(Debug, Clone, Default)]
pub struct RequestGuard {
    /// `host:port` values (lowercase) a request's `Host` must be; `None`: any (a master or
    /// agent reached by names only its operator knows).
    allowed_hosts: Option<Arc<Vec<String>>>,
    /// Body media types accepted besides JSON.
    extra_body_types: &'static [&'static str],
}

impl RequestGuard {
    /// Any `Host`; `Origin` and `Content-Type` checked.
    pub fn new() -> RequestGuard {
        RequestGuard::default()
    }

    /// Only the loopback names of `addr` (a loopback listener): `127.0.0.1`, `localhost`,
    /// `[::1]` and `addr`'s own address, each with `addr`'s port.
    pub fn loopback(addr: SocketAddr) -> RequestGuard {
        let port = addr.port();
        let mut hosts = vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
            addr.to_string(),
        ];
        hosts.sort();
        hosts.dedup();
        RequestGuard {
            allowed_hosts: Some(Arc::new(hosts)),
            extra_body_types: &[],
        }
    }

    /// Also accepts bodies of `types` on mutating requests.
    pub fn with_body_types(mut self, types: &'static [&'static str]) -> RequestGuard {
        self.extra_body_types = types;
        self
    }

    /// Accepts `request` or says why not (403 or 415).
    pub fn check(&self, request: &Request) -> Result<(), ApiError> {
        let headers = request.headers();
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase)
            .or_else(|| {
                request
                    .uri()
                    .authority()
                    .map(|a| a.as_str().to_ascii_lowercase())
            });
        if let Some(allowed) = &self.allowed_hosts {
            match &host {
                Some(host) if allowed.iter().any(|a| a == host) => {}
                Some(host) => {
                    return Err(forbidden(format!(
                        "Host {host:?} is not this server's (it answers to {}): a request for another name reached it, as in DNS rebinding",
                        allowed.join(", ")
                    )))
                }
                None => return Err(forbidden("the request has no Host header".into())),
            }
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
            let same = host.as_deref().is_some_and(|host| {
                origin == format!("http://{host}") || origin == format!("https://{host}")
            });
            if !same {
                return Err(forbidden(format!(
                    "cross-origin request refused: Origin {origin:?} is not this server ({})",
                    host.as_deref().unwrap_or("no Host")
                )));
            }
        }
        let mutating = matches!(
            *request.method(),
            Method::POST | Method::PUT | Method::PATCH
        );
        // Actions that take no body, which their clients send without a type (the DC/OS
        // CLI's restart, chronos-python's run-now): with neither body nor type (no framing
        // headers, an empty body) they pass; anything else needs JSON. A browser's bodiless
        // cross-site request also meets the Origin check.
        let path = request.uri().path();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let under = |prefixes: &[&str], rest: &[&str]| -> bool {
            prefixes.iter().any(|prefix| {
                let prefix: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
                segments.len() == prefix.len() + rest.len()
                    && segments.starts_with(&prefix)
                    && segments[prefix.len()..]
                        .iter()
                        .zip(rest)
                        .all(|(seg, want)| *want == "*" || seg == want)
            })
        };
        let action = match *request.method() {
            // Marathon's restart (app ids may have several segments).
            Method::POST if path.ends_with("/restart") && path.contains("/v2/apps/") => true,
            // Metronome's run and stop.
            Method::POST => {
                let metronome = ["/v1/jobs", "/service/metronome/v1/jobs"];
                under(&metronome, &["*", "runs"])
                    || under(&metronome, &["*", "runs", "*", "actions", "stop"])
            }
            // Chronos's run-now and mark-successful.
            Method::PUT => {
                let chronos = [
                    "/v1/scheduler",
                    "/scheduler",
                    "/chronos/v1/scheduler",
                    "/chronos/scheduler",
                ];
                under(&chronos, &["job", "*"]) || under(&chronos, &["job", "success", "*"])
            }
            _ => false,
        };
        let bodiless_action = action
            && !headers.contains_key(header::CONTENT_TYPE)
            && !headers.contains_key(header::TRANSFER_ENCODING)
            && headers
                .get(header::CONTENT_LENGTH)
                .is_none_or(|length| length.as_bytes() == b"0")
            && axum::body::HttpBody::size_hint(request.body()).exact() == Some(0);
        if mutating && !bodiless_action && !request.uri().path().starts_with("/internal/") {
            let given = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let essence = given
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let json = essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"));
            // Mesos's teardown takes a form (`frameworkId=...`), as its tools send it; with
            // credentials only, which a cross-site HTML form cannot carry.
            let teardown_form = essence == "application/x-www-form-urlencoded"
                && path == "/master/teardown"
                && headers.contains_key(header::AUTHORIZATION);
            if !json && !teardown_form && !self.extra_body_types.contains(&essence.as_str()) {
                let expected = std::iter::once("application/json")
                    .chain(self.extra_body_types.iter().copied())
                    .collect::<Vec<_>>()
                    .join(" or ");
                let given = if given.is_empty() {
                    "none".to_string()
                } else {
                    format!("{given:?}")
                };
                return Err(ApiError::new(
                    415,
                    "unsupported_media_type",
                    format!(
                        "{} needs `Content-Type: {expected}` (given: {given})",
                        request.method()
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(403, "forbidden", message)
}

/// Middleware: `guard.check`, else the refusal as a JSON error.
pub async fn guard_requests(
    State(guard): State<RequestGuard>,
    request: Request,
    next: Next,
) -> Response {
    match guard.check(&request) {
        Ok(()) => next.run(request).await,
        Err(error) => api_error(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    fn status(guard: &RequestGuard, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
        match guard.check(&request(method, path, headers)) {
            Ok(()) => 200,
            Err(e) => e.status,
        }
    }

    #[test]
    fn a_loopback_server_answers_only_to_its_own_names() {
        let guard = RequestGuard::loopback("127.0.0.1:5050".parse().unwrap());
        for host in [
            "127.0.0.1:5050",
            "localhost:5050",
            "LOCALHOST:5050",
            "[::1]:5050",
        ] {
            assert_eq!(
                status(&guard, "GET", "/v2/apps", &[("host", host)]),
                200,
                "{host}"
            );
        }
        for host in [
            "evil.example:5050",
            "127.0.0.1:80",
            "localhost",
            "10.0.0.1:5050",
        ] {
            assert_eq!(status(&guard, "GET", "/", &[("host", host)]), 403, "{host}");
        }
        assert_eq!(status(&guard, "GET", "/", &[]), 403);
        // Any name when the server does not know its names.
        assert_eq!(
            status(
                &RequestGuard::new(),
                "GET",
                "/",
                &[("host", "m1.example:5050")]
            ),
            200
        );
    }

    #[test]
    fn another_sites_origin_is_refused() {
        let guard = RequestGuard::loopback("127.0.0.1:5050".parse().unwrap());
        let host = ("host", "127.0.0.1:5050");
        let json = ("content-type", "application/json");
        assert_eq!(
            status(
                &guard,
                "POST",
                "/v2/apps",
                &[host, json, ("origin", "http://127.0.0.1:5050")]
            ),
            200
        );
        for origin in [
            "http://evil.example",
            "null",
            "http://localhost:5050",
            "http://127.0.0.1:5051",
        ] {
            assert_eq!(
                status(
                    &guard,
                    "POST",
                    "/v2/apps",
                    &[host, json, ("origin", origin)]
                ),
                403,
                "{origin}"
            );
            assert_eq!(
                status(&guard, "GET", "/v2/apps", &[host, ("origin", origin)]),
                403
            );
        }
    }

    #[test]
    fn mutations_need_a_json_body_type() {
        let guard = RequestGuard::new();
        let host = ("host", "m:5050");
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            assert_eq!(
                status(&guard, "POST", "/v2/apps", &[host, ("content-type", ct)]),
                200,
                "{ct}"
            );
        }
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
        ] {
            for method in ["POST", "PUT", "PATCH"] {
                assert_eq!(
                    status(&guard, method, "/v2/apps", &[host, ("content-type", ct)]),
                    415,
                    "{method} {ct}"
                );
            }
        }
        // Mesos's teardown form, with credentials only.
        let form = ("content-type", "application/x-www-form-urlencoded");
        assert_eq!(
            status(&guard, "POST", "/master/teardown", &[host, form]),
            415
        );
        assert_eq!(
            status(
                &guard,
                "POST",
                "/master/teardown",
                &[host, form, ("authorization", "Bearer x")]
            ),
            200
        );
        assert_eq!(
            status(
                &guard,
                "POST",
                "/v2/apps",
                &[host, form, ("authorization", "Bearer x")]
            ),
            415
        );
        // Without a type, only a restart without a body passes.
        assert_eq!(status(&guard, "POST", "/v2/apps/x/restart", &[host]), 200);
        assert_eq!(
            status(
                &guard,
                "POST",
                "/v2/apps/x/restart",
                &[host, ("content-length", "0")]
            ),
            200
        );
        assert_eq!(
            status(&guard, "POST", "/v2/apps", &[host]),
            415,
            "not a restart"
        );
        assert_eq!(
            status(&guard, "POST", "/cluster/v1/agents/a/drain", &[host]),
            415
        );
        // Metronome's run and stop, Chronos's run-now (a PUT of the job's path) likewise; a
        // PUT of an app does not.
        assert_eq!(status(&guard, "POST", "/v1/jobs/etl/runs", &[host]), 200);
        assert_eq!(
            status(
                &guard,
                "POST",
                "/service/metronome/v1/jobs/etl/runs/r1/actions/stop",
                &[host]
            ),
            200
        );
        assert_eq!(status(&guard, "PUT", "/v1/scheduler/job/etl", &[host]), 200);
        assert_eq!(status(&guard, "PUT", "/v2/apps/x", &[host]), 415);
        for (method, path) in [
            ("PUT", "/v2/apps/scheduler/job/x"),
            ("PUT", "/v1/scheduler/job/stat/x"),
            ("POST", "/v1/jobs/x/runs/y"),
            ("POST", "/cluster/v1/restart"),
        ] {
            assert_eq!(
                status(&guard, method, path, &[host]),
                415,
                "{method} {path}"
            );
        }
        for framing in [("content-length", "2"), ("transfer-encoding", "chunked")] {
            let path = "/v2/apps/x/restart";
            assert_eq!(
                status(&guard, "POST", path, &[host, framing]),
                415,
                "{framing:?}"
            );
        }
        // A body the headers do not announce (HTTP/2 frames one without Content-Length).
        let with_body = Request::builder()
            .method("POST")
            .uri("/v2/apps/x/restart")
            .header("host", "m:5050")
            .body(axum::body::Body::from("{}"))
            .unwrap();
        assert_eq!(guard.check(&with_body).map_err(|e| e.status), Err(415));
        // Reads, deletions and node-to-node calls are not asked for one.
        assert_eq!(status(&guard, "GET", "/v2/apps", &[host]), 200);
        assert_eq!(status(&guard, "DELETE", "/v2/apps/x", &[host]), 200);
        assert_eq!(
            status(&guard, "POST", "/internal/raft/append", &[host]),
            200
        );
        // The agent's upload takes tarballs too.
        let agent = RequestGuard::new().with_body_types(UPLOAD_TYPES);
        assert_eq!(
            status(
                &agent,
                "POST",
                "/images",
                &[host, ("content-type", "application/x-tar")]
            ),
            200
        );
        assert_eq!(
            status(
                &agent,
                "POST",
                "/images",
                &[host, ("content-type", "text/plain")]
            ),
            415
        );
    }
}
