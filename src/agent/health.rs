//! Health checks beside the tasks (as Mesos's executor runs Marathon's MESOS_ checks): the
//! agent probes each running task that has checks on `127.0.0.1:<its host port>` (HTTP or
//! HTTPS GET, healthy on 200-399, or a TCP connect) or runs the check's command beside the
//! task (`command_check.rs`, healthy on exit 0), never from the master. A change of what the checks
//! found (healthy or not, failures in a row, a check exhausted) is reported to the master
//! like a status (`TaskReport::health`), which records it (`Command::TaskHealth`); the
//! services framework replaces a task whose check reached its `maxConsecutiveFailures`.
//!
//! Timing as Marathon's: the first probe `delaySeconds` after the task runs, then every
//! `intervalSeconds`, each bounded by `timeoutSeconds`; failures within `gracePeriodSeconds`
//! of the start do not count until a probe has succeeded. The checks of a task are kept in
//! `health_checks.json` in its sandbox, so they go on after an agent restart.

use super::Agent;
use crate::link::{now_ms, TaskReport, ToMaster};
use dcos_core::{TaskHealth, TaskHealthCheck};
use dcos_runtime::task_dir::TaskDir;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The task's checks, beside its spec.
pub(super) fn checks_file(dir: &TaskDir) -> PathBuf {
    dir.path.join("health_checks.json")
}

/// Reads a task's checks (none when it has none, or the file is unreadable).
pub(super) fn read_checks(dir: &TaskDir) -> Vec<TaskHealthCheck> {
    dcos_runtime::task_dir::read_json(&checks_file(dir)).unwrap_or_default()
}

/// The largest answer head read from an HTTP check (the status line is all that counts).
const HTTP_HEAD_MAX_BYTES: usize = 1024;
/// The largest head read before a body that is kept (readiness checks' `lastResponse`).
const HTTP_HEADERS_MAX_BYTES: usize = 16 * 1024;

/// What the checks of the running tasks have found so far.
#[derive(Default)]
pub(super) struct HealthBook {
    tasks: BTreeMap<String, TaskChecks>,
}

struct TaskChecks {
    running_since_ms: u64,
    checks: Vec<CheckState>,
    first_success_ms: Option<u64>,
    last_success_ms: Option<u64>,
    last_failure_ms: Option<u64>,
    last_failure_cause: Option<String>,
    reported: Option<TaskHealth>,
}

struct CheckState {
    spec: TaskHealthCheck,
    next_due_ms: u64,
    in_flight: bool,
    /// The last probe's verdict (`None` before the first).
    passed: Option<bool>,
    failures: u32,
    ever_passed: bool,
}

impl TaskChecks {
    fn new(checks: Vec<TaskHealthCheck>, now_ms: u64) -> TaskChecks {
        TaskChecks {
            running_since_ms: now_ms,
            checks: checks
                .into_iter()
                .map(|spec| CheckState {
                    next_due_ms: now_ms + u64::from(spec.delay_seconds) * 1000,
                    spec,
                    in_flight: false,
                    passed: None,
                    failures: 0,
                    ever_passed: false,
                })
                .collect(),
            first_success_ms: None,
            last_success_ms: None,
            last_failure_ms: None,
            last_failure_cause: None,
            reported: None,
        }
    }

    /// Records one probe's outcome (`Err` with the cause for a failure).
    fn record(&mut self, index: usize, outcome: Result<(), String>, now_ms: u64) {
        let running_since = self.running_since_ms;
        let Some(check) = self.checks.get_mut(index) else {
            return;
        };
        check.in_flight = false;
        check.next_due_ms = now_ms + u64::from(check.spec.interval_seconds.max(1)) * 1000;
        match outcome {
            Ok(()) => {
                check.passed = Some(true);
                check.failures = 0;
                check.ever_passed = true;
                self.first_success_ms.get_or_insert(now_ms);
                self.last_success_ms = Some(now_ms);
            }
            Err(cause) => {
                let in_grace = !check.ever_passed
                    && now_ms < running_since + u64::from(check.spec.grace_period_seconds) * 1000;
                if in_grace {
                    return;
                }
                check.passed = Some(false);
                check.failures = check.failures.saturating_add(1);
                self.last_failure_ms = Some(now_ms);
                self.last_failure_cause = Some(cause);
            }
        }
    }

    fn health(&self) -> TaskHealth {
        TaskHealth {
            alive: self.checks.iter().all(|c| c.passed == Some(true)),
            consecutive_failures: self.checks.iter().map(|c| c.failures).max().unwrap_or(0),
            exhausted: self.checks.iter().any(|c| {
                c.spec.max_consecutive_failures > 0 && c.failures >= c.spec.max_consecutive_failures
            }),
            first_success_ms: self.first_success_ms,
            last_success_ms: self.last_success_ms,
            last_failure_ms: self.last_failure_ms,
            last_failure_cause: self.last_failure_cause.clone(),
        }
    }

    /// The health to report, if it changed in what the master acts on (alive, exhausted):
    /// a check failing on and on is one report, not one per probe.
    fn take_change(&mut self) -> Option<TaskHealth> {
        let health = self.health();
        let changed = match &self.reported {
            None => self.checks.iter().any(|c| c.passed.is_some()),
            Some(last) => last.alive != health.alive || last.exhausted != health.exhausted,
        };
        changed.then(|| {
            self.reported = Some(health.clone());
            health
        })
    }
}

impl Agent {
    /// Starts the probes that are due, for every running task with checks; forgets the
    /// tasks that ended. Called on every monitor tick; probes run on their own.
    pub(super) fn run_health_checks(&self) {
        let now = now_ms();
        let running: Vec<(String, (TaskDir, Vec<TaskHealthCheck>))> = {
            let tasks = self.tasks.lock().expect("tasks lock");
            tasks
                .iter()
                .filter(|(_, t)| t.running_reported && !t.terminal_reported)
                .filter(|(_, t)| !t.health_checks.is_empty())
                .map(|(id, t)| (id.clone(), (t.dir.clone(), t.health_checks.clone())))
                .collect()
        };
        let mut due = Vec::new();
        {
            let mut book = self.health.lock().unwrap_or_else(|e| e.into_inner());
            book.tasks
                .retain(|id, _| running.iter().any(|(running_id, _)| running_id == id));
            for (task_id, (dir, checks)) in running {
                let entry = book
                    .tasks
                    .entry(task_id.clone())
                    .or_insert_with(|| TaskChecks::new(checks, now));
                for (index, check) in entry.checks.iter_mut().enumerate() {
                    if !check.in_flight && now >= check.next_due_ms {
                        check.in_flight = true;
                        due.push((task_id.clone(), index, check.spec.clone(), dir.clone()));
                    }
                }
            }
        }
        for (task_id, index, spec, dir) in due {
            let book = Arc::clone(&self.health);
            let to_master = self.to_master.clone();
            let exe = self.config.shim_exe.clone();
            tokio::spawn(async move {
                let outcome = probe(&spec, &dir, &exe).await;
                let report = {
                    let mut book = book.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(task) = book.tasks.get_mut(&task_id) else {
                        return;
                    };
                    task.record(index, outcome, now_ms());
                    task.take_change()
                };
                if let Some(health) = report {
                    tracing::debug!(task = %task_id, alive = health.alive, failures = health.consecutive_failures, "health");
                    let report = TaskReport {
                        health: Some(health),
                        ..TaskReport::of_checks(task_id)
                    };
                    let _ = to_master.send(ToMaster::Status(report)).await;
                }
            });
        }
    }
}

/// Shared between the monitor and the probes in flight.
pub(super) type Book = Arc<Mutex<HealthBook>>;

/// One probe of `check` for the task in `dir`, bounded by its timeout.
async fn probe(
    check: &TaskHealthCheck,
    dir: &TaskDir,
    exe: &std::path::Path,
) -> Result<(), String> {
    let timeout = Duration::from_secs(u64::from(check.timeout_seconds.max(1)));
    if check.protocol == "command" {
        let command = check.command.as_deref().unwrap_or_default();
        // Bounded by the check itself: the command is killed at the timeout.
        return super::command_check::run(exe, dir, command, timeout).await;
    }
    match tokio::time::timeout(timeout, probe_unbounded(check)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "no answer within {} s",
            check.timeout_seconds.max(1)
        )),
    }
}

async fn probe_unbounded(check: &TaskHealthCheck) -> Result<(), String> {
    let path = check.path.as_deref().unwrap_or("/");
    let status = match check.protocol.as_str() {
        "http" => http_status(check.port, path, false).await?,
        "https" => http_status(check.port, path, true).await?,
        _ => {
            tokio::net::TcpStream::connect(("127.0.0.1", check.port))
                .await
                .map_err(|e| format!("connect to 127.0.0.1:{}: {e}", check.port))?;
            return Ok(());
        }
    };
    match status {
        100..=199 if check.ignore_http1xx => Ok(()),
        200..=399 => Ok(()),
        other => Err(format!("GET {path} answered {other}")),
    }
}

/// `GET path` on `127.0.0.1:port` (over TLS without a certificate check when `tls`, as
/// Mesos's HTTPS checks: the task's own port on the agent's loopback), the answer's status.
/// Unbounded in time: callers put a timeout around it.
pub(super) async fn http_status(port: u16, path: &str, tls: bool) -> Result<u16, String> {
    http_get(port, path, tls, 0)
        .await
        .map(|answer| answer.status)
}

/// An answer to a check's GET: its status, content type and at most the asked-for start of
/// its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HttpAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET path` as `http_status`, keeping up to `body_max` bytes of the body. HTTP/1.0, so
/// the body is never chunked; the connection is closed after the answer.
pub(super) async fn http_get(
    port: u16,
    path: &str,
    tls: bool,
    body_max: usize,
) -> Result<HttpAnswer, String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
    if !tls {
        return get(stream, port, path, body_max).await;
    }
    let connector = tokio_rustls::TlsConnector::from(crate::tls::probe_client_config());
    let name = rustls_pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let stream = connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake with 127.0.0.1:{port}: {e}"))?;
    get(stream, port, path, body_max).await
}

async fn get<S>(mut stream: S, port: u16, path: &str, body_max: usize) -> Result<HttpAnswer, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: dcos-rs-health-check\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    // The status line only, or the whole head and the wanted part of the body.
    let limit = if body_max == 0 {
        HTTP_HEAD_MAX_BYTES
    } else {
        HTTP_HEADERS_MAX_BYTES + body_max
    };
    let mut answer = vec![0u8; limit];
    let mut read = 0;
    loop {
        let complete = if body_max == 0 {
            answer[..read].contains(&b'\n')
        } else {
            // The head, and the body up to its Content-Length or what is kept of it: a
            // server that keeps the connection open is not waited for.
            head_end(&answer[..read]).is_some_and(|end| {
                let wanted = content_length(&answer[..end]).map_or(body_max, |n| n.min(body_max));
                read >= end + wanted
            })
        };
        if complete || read == limit {
            break;
        }
        match stream.read(&mut answer[read..]).await {
            Ok(0) => break,
            Ok(n) => read += n,
            // A TLS server closing without close_notify, once its head is here: the end.
            Err(_) if body_max > 0 && head_end(&answer[..read]).is_some() => break,
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
    let answer = &answer[..read];
    let status = status_code(answer).ok_or_else(|| "the answer is not HTTP".to_string())?;
    let (content_type, body) = match head_end(answer) {
        Some(end) if body_max > 0 => {
            let head = String::from_utf8_lossy(&answer[..end]);
            let content_type = head
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-type"))
                .map(|(_, value)| value.trim().to_string())
                .unwrap_or_default();
            let body = &answer[end..answer.len().min(end + body_max)];
            (content_type, String::from_utf8_lossy(body).into_owned())
        }
        _ => (String::new(), String::new()),
    };
    Ok(HttpAnswer {
        status,
        content_type,
        body,
    })
}

/// The `Content-Length` of an answer's head, if it has a valid one.
fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
}

/// Where an answer's head ends (after its blank line), if it is all there.
fn head_end(answer: &[u8]) -> Option<usize> {
    answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| answer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// The status code of an HTTP answer's first line (`HTTP/1.1 200 OK`).
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(max: u32, grace: u32) -> TaskHealthCheck {
        TaskHealthCheck {
            protocol: "http".into(),
            port: 1,
            path: Some("/".into()),
            grace_period_seconds: grace,
            interval_seconds: 1,
            timeout_seconds: 1,
            max_consecutive_failures: max,
            delay_seconds: 0,
            ignore_http1xx: false,
            command: None,
        }
    }

    #[test]
    fn failures_count_after_the_grace_period_and_exhaust_at_the_maximum() {
        let mut task = TaskChecks::new(vec![check(3, 10)], 0);
        task.record(0, Err("down".into()), 1_000);
        assert_eq!(
            task.take_change(),
            None,
            "a failure in the grace period does not count"
        );
        task.record(0, Ok(()), 2_000);
        let healthy = task.take_change().expect("first result");
        assert!(healthy.alive && !healthy.exhausted && healthy.first_success_ms == Some(2_000));
        task.record(0, Err("503".into()), 3_000);
        let failing = task
            .take_change()
            .expect("a failure after a success counts");
        assert!(!failing.alive && failing.consecutive_failures == 1 && !failing.exhausted);
        task.record(0, Err("503".into()), 4_000);
        assert_eq!(task.take_change(), None, "one more failure is no news");
        task.record(0, Err("503".into()), 5_000);
        let exhausted = task.take_change().expect("exhausted is news");
        assert!(exhausted.exhausted && exhausted.consecutive_failures == 3);
        assert_eq!(exhausted.last_failure_cause.as_deref(), Some("503"));
    }

    #[test]
    fn status_lines_are_read() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.0 503\r\n"), Some(503));
        assert_eq!(status_code(b"SSH-2.0\r\n"), None);
    }

    /// An HTTPS check reaches a server whose certificate the agent does not trust (a task's
    /// own, self-issued one), as Mesos's HTTPS checks do.
    #[tokio::test]
    async fn https_probes_accept_any_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dcos_pki::init_ca(&dir.path().join("ca"), false).unwrap();
        let (cert, key) = dcos_pki::issue_cert(
            &dir.path().join("ca"),
            dcos_pki::Role::Agent,
            "task",
            &["127.0.0.1".to_string()],
            dir.path(),
            1,
        )
        .unwrap();
        let files = crate::tls::TlsFiles {
            ca: ca.cert.clone(),
            cert,
            key,
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(crate::tls::server_config(&files).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(socket).await.unwrap();
            let mut buf = [0u8; 512];
            let _ = tls.read(&mut buf).await;
            let _ = tls.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
            let _ = tls.shutdown().await;
        });
        let mut https = check(3, 0);
        https.protocol = "https".into();
        https.port = port;
        assert_eq!(
            probe(
                &https,
                &TaskDir::new("/nonexistent"),
                std::path::Path::new("/nonexistent")
            )
            .await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn http_and_tcp_probes_reach_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for answer in ["HTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 500 Oops\r\n\r\n", ""] {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        let mut http = check(3, 0);
        http.port = port;
        let dir = TaskDir::new("/nonexistent");
        assert_eq!(
            probe(&http, &dir, std::path::Path::new("/nonexistent")).await,
            Ok(())
        );
        assert!(probe(&http, &dir, std::path::Path::new("/nonexistent"))
            .await
            .unwrap_err()
            .contains("answered 500"));
        let mut tcp = http.clone();
        tcp.protocol = "tcp".into();
        assert_eq!(
            probe(&tcp, &dir, std::path::Path::new("/nonexistent")).await,
            Ok(())
        );
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        tcp.port = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(probe(&tcp, &dir, std::path::Path::new("/nonexistent"))
            .await
            .unwrap_err()
            .contains("connect"));
    }
}
