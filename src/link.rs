//! Messages between the leading master and its agents.
//!
//! In `dcos-rs up` both ends live in one process and these travel over bounded tokio
//! channels; the multi-host transport (HTTPS streams) carries the same messages. The
//! receiving side never trusts ordering across agents, only per agent.

use dcos_core::{Agent, Task, TaskState};
use std::collections::BTreeSet;
use tokio::sync::{mpsc, oneshot};

/// Bound of each link's queue: a slow peer applies back-pressure instead of growing memory.
pub const LINK_QUEUE_MAX: usize = 1024;

#[derive(Debug)]
pub enum ToAgent {
    Launch(Box<Task>),
    /// `grace_ms`: the kill's own grace period between the stop signal and SIGKILL (a
    /// Mesos framework's KILL with a `kill_policy`); `None` keeps the launch's.
    Kill {
        task_id: String,
        grace_ms: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReport {
    pub task_id: String,
    pub state: TaskState,
    pub message: Option<String>,
    pub exit_code: Option<i32>,
    pub at_ms: u64,
    /// A report of the task's health checks (its state is then unchanged, `Running`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<dcos_core::TaskHealth>,
    /// A report of the task's readiness check (its state is then unchanged, `Running`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<dcos_core::TaskReadiness>,
    /// With a task's end, the end of its output when its launch asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<dcos_core::types::TaskOutput>,
}

#[derive(Debug)]
pub enum ToMaster {
    /// Sent on every agent start: who it is, what it runs now, and where to send commands.
    Register {
        agent: Agent,
        tasks: Vec<TaskReport>,
        link: mpsc::Sender<ToAgent>,
    },
    Status(TaskReport),
    /// A status from a remote agent: `ack` hears whether it was committed (then the agent
    /// drops it from its outbox) or must be sent again.
    StatusAcked {
        report: TaskReport,
        ack: oneshot::Sender<bool>,
    },
    /// The agent's image store changed: the presence keys of what it holds now (see
    /// `dcos_core::Agent::images`). `ack` hears whether it was committed, so an import
    /// answers only once placement can use the image.
    Images {
        agent_id: String,
        images: BTreeSet<String>,
        ack: oneshot::Sender<bool>,
    },
}

impl TaskReport {
    /// A report of what a live task's checks found (its state unchanged, `Running`); the
    /// caller sets `health` or `readiness`.
    pub fn of_checks(task_id: String) -> TaskReport {
        TaskReport {
            task_id,
            state: TaskState::Running,
            message: None,
            exit_code: None,
            at_ms: now_ms(),
            health: None,
            readiness: None,
            output: None,
        }
    }
}

/// Paths of the agent protocol on the master's port (mutual TLS, agent certificates).
pub use dcos_api::routes::internal::{
    AGENT_CONNECT as AGENT_CONNECT_PATH, AGENT_HEARTBEAT as AGENT_HEARTBEAT_PATH,
    AGENT_IMAGES as AGENT_IMAGES_PATH, AGENT_STATUS as AGENT_STATUS_PATH,
};

/// The version of the agent protocol (the messages of this file and the `Task` they
/// carry). Masters and agents of different versions refuse each other at connect, with a
/// message saying which to upgrade: a task built by one version is not what the other runs.
/// 2: tasks have owners and carry their framework's variables; agents report their images.
pub const AGENT_PROTOCOL_VERSION: u32 = 2;
/// The header in which a master answering a connect names its protocol version.
pub const PROTOCOL_HEADER: &str = "x-dcos-agent-protocol";

/// What an agent sends to (re)connect: itself and what it runs now.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ConnectRequest {
    /// `AGENT_PROTOCOL_VERSION` of the agent; absent (0) from agents before version 2.
    #[serde(default)]
    pub protocol: u32,
    pub agent: Agent,
    pub tasks: Vec<TaskReport>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRequest {
    pub agent_id: String,
    pub report: TaskReport,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatRequest {
    pub agent_id: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagesRequest {
    pub agent_id: String,
    pub images: BTreeSet<String>,
}

/// One line of the connect stream (newline-delimited JSON), master to agent.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum StreamMessage {
    Launch {
        task: Box<Task>,
    },
    #[serde(rename_all = "camelCase")]
    Kill {
        task_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace_ms: Option<u64>,
    },
    /// Sent every few seconds so both ends notice a dead connection.
    Ping,
    /// A message of a newer master that this agent does not know: ignored.
    #[serde(other)]
    Unknown,
}

/// The leader pings every connect stream this often: a dead connection is noticed by the
/// write failing on the master's side and by the silence on the agent's.
pub const PING_INTERVAL_MS: u64 = 5_000;

/// The header naming the leader's URL on a follower's redirect (and on `no_leader` answers
/// where one is known).
pub const LEADER_HEADER: &str = "x-dcos-leader";

/// Longest line of the connect stream an agent accepts (a launch carries the whole task).
pub const STREAM_LINE_MAX_BYTES: usize = 4 << 20;

/// Longest task status message kept in the replicated state; longer ones (a launch error's
/// whole chain, say) are cut, on a character boundary, with `…` at the end.
pub const STATUS_MESSAGE_MAX_BYTES: usize = 4096;

/// `message` cut to `STATUS_MESSAGE_MAX_BYTES`.
pub fn bounded_status_message(message: String) -> String {
    if message.len() <= STATUS_MESSAGE_MAX_BYTES {
        return message;
    }
    let ellipsis = "…";
    let mut end = STATUS_MESSAGE_MAX_BYTES - ellipsis.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &message[..end])
}

/// Set (`true`) on an agent's `/files/browse.json` answer that left entries out (it lists at
/// most `agent::mesos::BROWSE_ENTRIES_MAX`); the master passes it on.
pub const ENTRIES_TRUNCATED_HEADER: &str = "x-dcos-entries-truncated";

/// Mesos's virtual path of a task's sandbox on its agent
/// (`/frameworks/<framework id>/executors/<executor id>/runs/latest`): the master names a
/// sandbox with it without knowing the agent's work dir, and the agent's `/files`
/// endpoints resolve it back to the task (`agent::mesos`).
pub fn sandbox_virtual_path(framework_id: &str, task_id: &str) -> String {
    dcos_api::routes::agent::sandbox_virtual_path(
        framework_id,
        dcos_core::framework_own_task_id(framework_id, task_id),
    )
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A random 128-bit id in UUID v4 text form, from the kernel's CSPRNG.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // One getrandom(2) call (the kernel's urandom pool, never blocking once it is seeded at
    // boot) instead of opening /dev/urandom on every write that names a deployment.
    // SAFETY: the kernel writes at most `bytes.len()` bytes into our buffer.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled != bytes.len() as isize {
        // Never expected on Linux; fall back to time + pid so ids stay unique per process.
        let seed = (now_ms() as u128) << 32 | std::process::id() as u128;
        bytes = seed.to_le_bytes();
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_is_named_by_its_framework_and_the_id_its_framework_knows() {
        use dcos_core::framework_own_task_id as executor_id;
        assert_eq!(executor_id("f1", "f1.t1"), "t1");
        assert_eq!(executor_id("dcos-rs-services", "web.abc"), "web.abc");
        assert_eq!(executor_id("f1", "f10.t1"), "f10.t1");
        assert_eq!(
            sandbox_virtual_path("f1", "f1.t1"),
            "/frameworks/f1/executors/t1/runs/latest"
        );
    }

    #[test]
    fn status_messages_are_cut_on_a_character_boundary() {
        assert_eq!(bounded_status_message("short".into()), "short");
        let exact = "x".repeat(STATUS_MESSAGE_MAX_BYTES);
        assert_eq!(bounded_status_message(exact.clone()), exact);
        for long in ["y".repeat(10_000), "é".repeat(5_000)] {
            let cut = bounded_status_message(long);
            assert!(cut.len() <= STATUS_MESSAGE_MAX_BYTES, "{}", cut.len());
            assert!(cut.ends_with('…'));
        }
    }
}
