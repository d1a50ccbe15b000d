//! `make bench-raft-single`: durable writes through one `ReplicatedState` on this machine's
//! disk: sequential latency, 16 concurrent writers (group commit), open and reopen times.
//! Numbers only (format: ARCHITECTURE.md, Benchmarks); the replicated comparison with etcd is `bench-raft`.

use dcos_core::{Agent, AgentState, Command, Resources};
use dcos_raft::{RaftOptions, ReplicatedState};
use std::time::Instant;

const WRITES: u64 = 300;
const WRITERS: u64 = 16;
const WRITES_PER_WRITER: u64 = 25;

fn command(i: u64) -> Command {
    Command::RegisterAgent {
        agent: Agent {
            id: format!("agent-{i}"),
            hostname: format!("agent-{i}.example"),
            url: format!("http://agent-{i}.example:5051"),
            resources: Resources {
                cpus_milli: 4_000,
                mem_mib: 8_192,
                disk_mib: 100_000,
            },
            state: AgentState::Active,
            registered_at_ms: 1,
            ports: vec![],
            certificate: None,
            certificate_serial: None,
            version: String::new(),
            images: Default::default(),
            attributes: Default::default(),
        },
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let opts = || RaftOptions::single(dir.path(), "127.0.0.1:5050");
    let opened = Instant::now();
    let state = ReplicatedState::open_single(opts()).await.expect("open");
    let open_ms = ms(opened);

    let mut latencies_ms = Vec::with_capacity(WRITES as usize);
    for i in 0..WRITES {
        let started = Instant::now();
        state.write(command(i)).await.expect("write");
        latencies_ms.push(ms(started));
    }
    latencies_ms.sort_by(f64::total_cmp);
    let p50 = latencies_ms[latencies_ms.len() / 2];
    let p99 = latencies_ms[latencies_ms.len() * 99 / 100];

    let concurrent = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let state = state.clone();
            tokio::spawn(async move {
                for i in 0..WRITES_PER_WRITER {
                    state
                        .write(command(10_000 + w * 100 + i))
                        .await
                        .expect("write");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let concurrent_s = concurrent.elapsed().as_secs_f64();
    state.shutdown().await.expect("shutdown");

    let reopened = Instant::now();
    let state = ReplicatedState::open_single(opts()).await.expect("reopen");
    let reopen_ms = ms(reopened);
    state.shutdown().await.expect("shutdown");

    println!("BENCH raft_single_write_p50 {p50:.3} ms");
    println!("BENCH raft_single_write_p99 {p99:.3} ms");
    println!(
        "BENCH raft_single_writes_c{WRITERS} {:.0} ops/s",
        (WRITERS * WRITES_PER_WRITER) as f64 / concurrent_s
    );
    println!("BENCH raft_single_open {open_ms:.1} ms");
    println!("BENCH raft_single_reopen {reopen_ms:.1} ms");
}
