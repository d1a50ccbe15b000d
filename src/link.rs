//! Messages between the leading master and its agents.
//!
//! In `dcos-rs up` both ends live in one process and these travel over bounded tokio
//! channels; the multi-host transport (HTTPS streams) carries the same messages. The
//! receiving side never trusts ordering across agents, only per agent.

use dcos_core::{Agent, Task, TaskState};
use tokio::sync::{mpsc, oneshot};

/// Bound of each link's queue: a slow peer applies back-pressure instead of growing memory.
pub const LINK_QUEUE_MAX: usize = 1024;

#[derive(Debug)]
pub enum ToAgent {
    Launch(Box<Task>),
    Kill {
        task_id: String,
    },
    /// Does the agent's image store resolve this reference? (checked before an app is accepted)
    HasImage {
        reference: String,
        reply: oneshot::Sender<bool>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskReport {
    pub task_id: String,
    pub state: TaskState,
    pub message: Option<String>,
    pub exit_code: Option<i32>,
    pub at_ms: u64,
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
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A random 128-bit id in UUID v4 text form, from the kernel's CSPRNG.
pub fn random_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
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
