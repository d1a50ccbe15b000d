//! Readiness checks beside the tasks (Marathon's `readinessChecks`): from the moment a task
//! runs, the agent sends `GET <path>` to `127.0.0.1:<its port>` every `intervalSeconds`
//! (each bounded by `timeoutSeconds`) until the answer's status is one of the check's
//! ready statuses. Then the task is ready and the check stops, as in Marathon: readiness
//! gates a deployment's progress, it is not a health check.
//!
//! A result is reported to the master like a status (`TaskReport::readiness`) when it
//! changes (the first answer, a new status, ready); the master records it
//! (`Command::TaskReadiness`) and the services planner counts a task with a readiness check
//! towards a deployment only once it is ready (`planner::ready`). The checks of a task are
//! kept in `readiness_checks.json` in its sandbox, so they go on after an agent restart.

use super::Agent;
use crate::link::{now_ms, TaskReport, ToMaster};
use dcos_core::{ReadinessResponse, TaskReadiness, TaskReadinessCheck};
use dcos_runtime::task_dir::TaskDir;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The task's readiness checks, beside its spec.
pub(super) fn checks_file(dir: &TaskDir) -> PathBuf {
    dir.path.join("readiness_checks.json")
}

/// The most of an answer's body kept in a preserved `lastResponse` (the master bounds what
/// it records again).
pub(super) const READINESS_BODY_MAX_BYTES: usize = 4096;

/// What the readiness checks of the running tasks have found so far.
#[derive(Default)]
pub(super) struct ReadinessBook {
    tasks: BTreeMap<String, TaskChecks>,
}

/// Shared between the monitor and the probes in flight.
pub(super) type Book = Arc<Mutex<ReadinessBook>>;

struct TaskChecks {
    /// The task's check (validation allows one per app); `None`: it has none.
    check: Option<TaskReadinessCheck>,
    next_due_ms: u64,
    in_flight: bool,
    reported: Option<TaskReadiness>,
}

impl TaskChecks {
    fn done(&self) -> bool {
        self.check.is_none() || self.reported.as_ref().is_some_and(|r| r.ready)
    }

    /// Records one probe's result; the result to report if it is news.
    fn record(&mut self, result: TaskReadiness, now_ms: u64) -> Option<TaskReadiness> {
        self.in_flight = false;
        let interval = self.check.as_ref().map_or(1, |c| c.interval_seconds.max(1));
        self.next_due_ms = now_ms + u64::from(interval) * 1000;
        let status = |r: &TaskReadiness| r.last_response.as_ref().map(|l| l.status);
        let news = match &self.reported {
            None => true,
            Some(last) => last.ready != result.ready || status(last) != status(&result),
        };
        news.then(|| {
            self.reported = Some(result.clone());
            result
        })
    }
}

/// The result of one answer to `check` (`None`: no answer, with the cause logged).
fn result_of(
    check: &TaskReadinessCheck,
    answer: Option<super::health::HttpAnswer>,
) -> TaskReadiness {
    let ready = answer
        .as_ref()
        .is_some_and(|a| check.ready_statuses.contains(&a.status));
    TaskReadiness {
        name: check.name.clone(),
        ready,
        last_response: answer
            .filter(|_| check.preserve_last_response)
            .map(|a| ReadinessResponse {
                status: a.status,
                content_type: a.content_type,
                body: a.body,
            }),
    }
}

impl Agent {
    /// Starts the readiness probes that are due for the running tasks not ready yet; forgets
    /// the tasks that ended. Called on every monitor tick; probes run on their own.
    pub(super) fn run_readiness_checks(&self) {
        let now = now_ms();
        let running: Vec<(String, TaskDir)> = {
            let tasks = self.tasks.lock().expect("tasks lock");
            tasks
                .iter()
                .filter(|(_, t)| t.running_reported && !t.terminal_reported)
                .map(|(id, t)| (id.clone(), t.dir.clone()))
                .collect()
        };
        let mut due = Vec::new();
        {
            let mut book = self.readiness.lock().unwrap_or_else(|e| e.into_inner());
            book.tasks
                .retain(|id, _| running.iter().any(|(running_id, _)| running_id == id));
            for (task_id, dir) in running {
                let entry = book.tasks.entry(task_id.clone()).or_insert_with(|| {
                    let checks: Vec<TaskReadinessCheck> =
                        dcos_runtime::task_dir::read_json(&checks_file(&dir)).unwrap_or_default();
                    TaskChecks {
                        check: checks.into_iter().next(),
                        next_due_ms: now,
                        in_flight: false,
                        reported: None,
                    }
                });
                if entry.done() || entry.in_flight || now < entry.next_due_ms {
                    continue;
                }
                if let Some(check) = &entry.check {
                    entry.in_flight = true;
                    due.push((task_id, check.clone()));
                }
            }
        }
        for (task_id, check) in due {
            let book = Arc::clone(&self.readiness);
            let to_master = self.to_master.clone();
            tokio::spawn(async move {
                let answer = probe(&check).await;
                if let Err(cause) = &answer {
                    tracing::debug!(task = %task_id, "readiness: {cause}");
                }
                let result = result_of(&check, answer.ok());
                let report = {
                    let mut book = book.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(task) = book.tasks.get_mut(&task_id) else {
                        return;
                    };
                    task.record(result, now_ms())
                };
                if let Some(readiness) = report {
                    tracing::debug!(task = %task_id, ready = readiness.ready, "readiness");
                    let report = TaskReport {
                        readiness: Some(readiness),
                        output: None,
                        ..TaskReport::of_checks(task_id)
                    };
                    let _ = to_master.send(ToMaster::Status(report)).await;
                }
            });
        }
    }
}

/// One probe of `check`, bounded by its timeout.
async fn probe(check: &TaskReadinessCheck) -> Result<super::health::HttpAnswer, String> {
    let timeout = Duration::from_secs(u64::from(check.timeout_seconds.max(1)));
    let body_max = if check.preserve_last_response {
        READINESS_BODY_MAX_BYTES
    } else {
        0
    };
    let get = super::health::http_get(check.port, &check.path, check.protocol == "https", body_max);
    match tokio::time::timeout(timeout, get).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn check(port: u16, preserve: bool) -> TaskReadinessCheck {
        TaskReadinessCheck {
            name: "readinessCheck".into(),
            protocol: "http".into(),
            port,
            path: "/ready".into(),
            interval_seconds: 2,
            timeout_seconds: 1,
            ready_statuses: vec![200, 204],
            preserve_last_response: preserve,
        }
    }

    #[test]
    fn news_is_the_first_result_a_new_status_or_ready_and_ready_ends_the_checks() {
        let spec = check(1, true);
        let mut task = TaskChecks {
            check: Some(spec.clone()),
            next_due_ms: 0,
            in_flight: true,
            reported: None,
        };
        let answer = |status: u16| super::super::health::HttpAnswer {
            status,
            content_type: "text/plain".into(),
            body: format!("status {status}"),
        };
        let first = task.record(result_of(&spec, Some(answer(503))), 1_000);
        assert!(first.is_some_and(|r| !r.ready && r.last_response.unwrap().status == 503));
        assert_eq!(task.next_due_ms, 3_000, "next probe one interval later");
        assert!(!task.done());
        assert_eq!(
            task.record(result_of(&spec, Some(answer(503))), 3_000),
            None
        );
        assert!(
            task.record(result_of(&spec, None), 5_000).is_some(),
            "no answer is news"
        );
        let ready = task
            .record(result_of(&spec, Some(answer(204))), 7_000)
            .unwrap();
        assert!(ready.ready && ready.last_response.unwrap().body == "status 204");
        assert!(task.done());
        let unpreserved = result_of(&check(1, false), Some(answer(200)));
        assert!(unpreserved.ready && unpreserved.last_response.is_none());
    }

    #[tokio::test]
    async fn a_probe_reads_status_content_type_and_a_bounded_body() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let n = socket.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /ready HTTP/1."));
            let body = "x".repeat(READINESS_BODY_MAX_BYTES * 2);
            let answer = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        });
        let answer = probe(&check(port, true)).await.unwrap();
        assert_eq!(answer.status, 503);
        assert_eq!(answer.content_type, "text/plain");
        assert_eq!(answer.body.len(), READINESS_BODY_MAX_BYTES);

        // A short body whose server keeps the connection open: read to its length.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = socket.read(&mut buf).await;
            let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            let _ = socket.write_all(answer.as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let answer = probe(&check(port, true)).await.unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(probe(&check(port, true))
            .await
            .unwrap_err()
            .contains("connect"));
    }
}
