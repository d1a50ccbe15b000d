//! Group commit: writes that arrive together share one log entry (`Command::Batch`), so each
//! master appends and fsyncs once for all of them instead of once per write.
//!
//! A write waits only for what is already in flight: when a slot is free a lone write goes
//! out at once as its own entry (no added latency); while `IN_FLIGHT_MAX` entries are being
//! committed, newcomers queue and leave together in the next one. Each caller still gets its
//! own outcome, in the order of the batch, which is the order of arrival in each lane
//! (`Lane`: single writes go before bulk ones).

use crate::{RaftError, TypeConfig};
use dcos_core::{Command, Outcome};
use openraft::Raft;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Most commands in one log entry.
pub const BATCH_MAX_COMMANDS: usize = 1024;
/// Largest log entry, encoded (a command alone, or the batch a write joins). A batch stops
/// growing before it would pass this; a command that alone passes it is refused. Followers
/// take `MAX_PAYLOAD_ENTRIES` entries per RPC within `RPC_BODY_MAX_BYTES`, so every entry a
/// leader writes is one they accept.
pub const ENTRY_MAX_BYTES: usize = 2 << 20;
const _: () = assert!(
    crate::network::MAX_PAYLOAD_ENTRIES as usize * ENTRY_MAX_BYTES * 2
        <= crate::network::RPC_BODY_MAX_BYTES,
    "an AppendEntries RPC of full entries (with room for its envelope) must fit the body limit"
);
/// Log entries being committed at once; more writes wait and are batched.
pub const IN_FLIGHT_MAX: usize = 4;
/// Writes waiting for a batch; beyond that `submit` waits for room.
pub const QUEUE_MAX: usize = 10_000;

struct Pending {
    command: Command,
    /// The command's encoded size.
    bytes: usize,
    reply: oneshot::Sender<Result<Outcome, RaftError>>,
}

/// Two queues: a write of the `Urgent` lane never waits behind the `Bulk` one (an API
/// request behind a flood of status updates); each lane keeps its own order.
pub(crate) struct Batcher {
    urgent: mpsc::Sender<Pending>,
    bulk: mpsc::Sender<Pending>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Single writes: requests, registrations.
    Urgent,
    /// Many writes at once (`ReplicatedState::propose_all`).
    Bulk,
}

impl Batcher {
    /// Starts the batching task; it ends when the `Batcher` is dropped.
    pub(crate) fn start(raft: Raft<TypeConfig>) -> Batcher {
        let (urgent, urgent_pending) = mpsc::channel(QUEUE_MAX);
        let (bulk, bulk_pending) = mpsc::channel(QUEUE_MAX);
        tokio::spawn(run(raft, urgent_pending, bulk_pending));
        Batcher { urgent, bulk }
    }

    /// Proposes `command` and waits until it is committed and applied (unbounded: the caller
    /// bounds the wait).
    pub(crate) async fn submit(&self, command: Command) -> Result<Outcome, RaftError> {
        let answer = self.enqueue(command, Lane::Urgent).await?;
        answer.await.map_err(|_| stopped())?
    }

    /// Queues `command` and returns where its outcome will come: writes queued one after
    /// another in one lane are applied in that order.
    pub(crate) async fn enqueue(
        &self,
        command: Command,
        lane: Lane,
    ) -> Result<oneshot::Receiver<Result<Outcome, RaftError>>, RaftError> {
        let bytes = encoded_len(&command)?;
        if bytes > ENTRY_MAX_BYTES {
            return Err(RaftError::TooLarge {
                bytes,
                max: ENTRY_MAX_BYTES,
            });
        }
        let (reply, answer) = oneshot::channel();
        let queue = match lane {
            Lane::Urgent => &self.urgent,
            Lane::Bulk => &self.bulk,
        };
        queue
            .send(Pending {
                command,
                bytes,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        Ok(answer)
    }
}

/// A command's encoded size, counted without keeping the encoding (the log encodes it).
pub(crate) fn encoded_len(command: &Command) -> Result<usize, RaftError> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, command)
        .map_err(|e| RaftError::Fatal(format!("encoding a command: {e}")))?;
    Ok(count.0)
}

fn stopped() -> RaftError {
    RaftError::Fatal("raft is shut down".to_string())
}

async fn run(
    raft: Raft<TypeConfig>,
    mut urgent: mpsc::Receiver<Pending>,
    mut bulk: mpsc::Receiver<Pending>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    // A write that did not fit the last batch opens the next one.
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => tokio::select! {
                biased;
                Some(first) = urgent.recv() => first,
                Some(first) = bulk.recv() => first,
                else => return,
            },
        };
        // Waiting for a slot is what lets a batch grow.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        // Urgent writes first: they join the next entry whatever waits in bulk.
        let (batch, rest) = take_batch(first, || {
            urgent.try_recv().ok().or_else(|| bulk.try_recv().ok())
        });
        carried = rest;
        // Proposed here, in order (entries reach the log in the order batches were made);
        // only the wait for the commit runs beside the next batches.
        let (replies, proposed) = propose(&raft, batch).await;
        tokio::spawn(async move {
            answer(replies, proposed).await;
            drop(slot);
        });
    }
}

/// One batch from `first` and what `next` gives while it has room: at most
/// `BATCH_MAX_COMMANDS` commands and `ENTRY_MAX_BYTES` encoded; the write that did not fit
/// is returned for the next batch.
fn take_batch(
    first: Pending,
    mut next: impl FnMut() -> Option<Pending>,
) -> (Vec<Pending>, Option<Pending>) {
    // A `Batch` wraps its commands: a few bytes each for the array and the variant name.
    const OVERHEAD_BYTES: usize = 16;
    let mut bytes = first.bytes + OVERHEAD_BYTES;
    let mut batch = vec![first];
    while batch.len() < BATCH_MAX_COMMANDS {
        let Some(pending) = next() else { break };
        if bytes + pending.bytes + 1 > ENTRY_MAX_BYTES {
            return (batch, Some(pending));
        }
        bytes += pending.bytes + 1;
        batch.push(pending);
    }
    (batch, None)
}

type Reply = oneshot::Sender<Result<Outcome, RaftError>>;
/// Where openraft answers a proposed entry.
type Applied =
    <<TypeConfig as openraft::RaftTypeConfig>::Responder as openraft::raft::responder::Responder<
        TypeConfig,
    >>::Receiver;

/// Hands one batch to Raft as one log entry; the receiver of its outcome, or the error.
async fn propose(
    raft: &Raft<TypeConfig>,
    batch: Vec<Pending>,
) -> (Vec<Reply>, Result<Applied, RaftError>) {
    let (mut commands, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let entry = if commands.len() == 1 {
        commands.pop().expect("one write")
    } else {
        Command::Batch(commands)
    };
    let proposed = raft.client_write_ff(entry).await.map_err(RaftError::from);
    (replies, proposed)
}

/// Gives each write of a proposed batch its outcome once the entry is applied.
async fn answer(replies: Vec<Reply>, proposed: Result<Applied, RaftError>) {
    let count = replies.len();
    let result = match proposed {
        Err(error) => Err(error),
        Ok(receiver) => match receiver.await {
            Err(_) => Err(RaftError::Fatal("raft is shut down".to_string())),
            Ok(Err(error)) => Err(RaftError::from(openraft::error::RaftError::APIError(error))),
            Ok(Ok(response)) => Ok(response.data),
        },
    };
    match result {
        Ok(outcomes) if outcomes.len() == count => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Ok(other) => {
            let error = RaftError::Fatal(format!(
                "{count} command(s) were applied with outcomes {other:?}"
            ));
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(bytes: usize) -> Pending {
        Pending {
            command: Command::Batch(vec![]),
            bytes,
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn a_batch_stays_within_its_command_count_and_its_bytes() {
        let mut queue: std::collections::VecDeque<Pending> = (0..BATCH_MAX_COMMANDS + 172)
            .map(|_| pending(100))
            .collect();
        let (batch, rest) = take_batch(pending(100), || queue.pop_front());
        assert_eq!(batch.len(), BATCH_MAX_COMMANDS);
        assert!(rest.is_none());

        // Big writes: a batch holds what fits, the next write opens the next batch.
        let big = ENTRY_MAX_BYTES / 3;
        let mut queue: std::collections::VecDeque<Pending> = (0..5).map(|_| pending(big)).collect();
        let (batch, rest) = take_batch(pending(big), || queue.pop_front());
        assert_eq!(batch.len(), 2, "a third would pass ENTRY_MAX_BYTES");
        assert!(batch.iter().map(|p| p.bytes).sum::<usize>() < ENTRY_MAX_BYTES);
        assert!(rest.is_some());
        assert_eq!(
            queue.len(),
            3,
            "the one that did not fit was taken out of the queue"
        );
    }
}
