//! Group commit: writes that arrive together share one log entry (`Command::Batch`), so each
//! master appends and fsyncs once for all of them instead of once per write.
//!
//! A write waits only for what is already in flight: when a slot is free a lone write goes
//! out at once as its own entry (no added latency); while `IN_FLIGHT_MAX` entries are being
//! committed, newcomers queue and leave together in the next one. Each caller still gets its
//! own outcome, in the order of the batch, which is the order of arrival.

use crate::{RaftError, TypeConfig};
use dcos_core::{Command, Outcome};
use openraft::Raft;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Most commands in one log entry.
pub const BATCH_MAX_COMMANDS: usize = 128;
/// Log entries being committed at once; more writes wait and are batched.
pub const IN_FLIGHT_MAX: usize = 4;
/// Writes waiting for a batch; beyond that `submit` waits for room.
pub const QUEUE_MAX: usize = 10_000;

struct Pending {
    command: Command,
    reply: oneshot::Sender<Result<Outcome, RaftError>>,
}

pub(crate) struct Batcher {
    queue: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the batching task; it ends when the `Batcher` is dropped.
    pub(crate) fn start(raft: Raft<TypeConfig>) -> Batcher {
        let (queue, pending) = mpsc::channel(QUEUE_MAX);
        tokio::spawn(run(raft, pending));
        Batcher { queue }
    }

    /// Proposes `command` and waits until it is committed and applied (unbounded: the caller
    /// bounds the wait).
    pub(crate) async fn submit(&self, command: Command) -> Result<Outcome, RaftError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || RaftError::Fatal("raft is shut down".to_string());
        self.queue
            .send(Pending { command, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(raft: Raft<TypeConfig>, mut pending: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    while let Some(first) = pending.recv().await {
        // Waiting for a slot is what lets a batch grow.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX_COMMANDS {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(slot);
        });
    }
}

async fn commit(raft: &Raft<TypeConfig>, batch: Vec<Pending>) {
    let (mut commands, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let count = commands.len();
    let entry = if count == 1 {
        commands.pop().expect("one write")
    } else {
        Command::Batch(commands)
    };
    match raft.client_write(entry).await {
        Ok(response) => match response.data {
            outcomes if outcomes.len() == count => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            other => {
                let error = RaftError::Fatal(format!(
                    "{count} command(s) were applied with outcomes {other:?}"
                ));
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        },
        Err(error) => {
            let error = RaftError::from(error);
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
