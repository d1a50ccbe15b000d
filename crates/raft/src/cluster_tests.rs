//! Multi-master tests of `ReplicatedState` over an in-process transport that can cut links:
//! cluster formation, replication, redirects to the leader, failover, a partitioned leader
//! that must not accept writes, membership changes and catch-up by snapshot.
//!
//! The transport carries the same JSON bodies as the HTTPS one; what is not covered here is
//! TLS and HTTP themselves (tests/it and e2e/ do those with real processes).

use crate::network::{Transport, TransportError, TransportFuture};
use crate::{RaftError, RaftOptions, ReplicatedState};
use dcos_core::{Agent, AgentState, Command, Outcome, Resources};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Nodes by address, and the directed links that are cut.
#[derive(Default)]
struct LocalNet {
    nodes: Mutex<HashMap<String, ReplicatedState>>,
    cut: Mutex<HashSet<(String, String)>>,
}

impl LocalNet {
    fn partition(&self, a: &str, b: &str) {
        let mut cut = self.cut.lock().unwrap();
        cut.insert((a.to_string(), b.to_string()));
        cut.insert((b.to_string(), a.to_string()));
    }

    fn heal(&self) {
        self.cut.lock().unwrap().clear();
    }
}

/// One node's view of the network: calls leave from `from`.
struct LocalTransport {
    from: String,
    net: Arc<LocalNet>,
}

impl Transport for LocalTransport {
    fn post<'a>(
        &'a self,
        addr: &'a str,
        rpc: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> TransportFuture<'a> {
        Box::pin(async move {
            let cut = self
                .net
                .cut
                .lock()
                .unwrap()
                .contains(&(self.from.clone(), addr.to_string()));
            let target = self.net.nodes.lock().unwrap().get(addr).cloned();
            let Some(target) = target.filter(|_| !cut) else {
                return Err(TransportError::Unreachable(format!("{addr} is cut off")));
            };
            match tokio::time::timeout(timeout, target.serve_rpc(rpc, &body)).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(e)) => Err(TransportError::Failed(e.to_string())),
                Err(_) => Err(TransportError::Unreachable(format!("{addr} timed out"))),
            }
        })
    }
}

fn addr(id: u64) -> String {
    format!("https://m{id}.test:5050")
}

struct Cluster {
    net: Arc<LocalNet>,
    dirs: BTreeMap<u64, TempDir>,
    nodes: BTreeMap<u64, ReplicatedState>,
}

impl Cluster {
    fn options(&self, id: u64, initial: &[u64]) -> RaftOptions {
        RaftOptions {
            node_id: id,
            advertise_addr: addr(id),
            initial_members: initial.iter().map(|i| (*i, addr(*i))).collect(),
            // Fast elections keep the tests short; the defaults are for real networks.
            heartbeat_ms: 50,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 400,
            // Frequent snapshots and no kept entries: late masters catch up by snapshot.
            snapshot_logs_since_last: 100,
            max_in_snapshot_log_to_keep: 0,
            ..RaftOptions::single(self.dirs[&id].path(), addr(id))
        }
    }

    async fn start(&mut self, id: u64, initial: &[u64]) {
        self.dirs
            .entry(id)
            .or_insert_with(|| TempDir::new().unwrap());
        let transport = Arc::new(LocalTransport {
            from: addr(id),
            net: Arc::clone(&self.net),
        });
        let node = ReplicatedState::open(self.options(id, initial), transport)
            .await
            .unwrap();
        self.net
            .nodes
            .lock()
            .unwrap()
            .insert(addr(id), node.clone());
        self.nodes.insert(id, node);
    }

    async fn new(ids: &[u64]) -> Cluster {
        let mut cluster = Cluster {
            net: Arc::default(),
            dirs: BTreeMap::new(),
            nodes: BTreeMap::new(),
        };
        for id in ids {
            cluster.start(*id, ids).await;
        }
        cluster
    }

    async fn stop(&mut self, id: u64) {
        self.net.nodes.lock().unwrap().remove(&addr(id));
        let node = self.nodes.remove(&id).unwrap();
        node.shutdown().await.unwrap();
    }

    /// Waits until the given nodes agree on one leader among them; returns it.
    async fn leader_among(&self, ids: &[u64], within: Duration) -> u64 {
        let started = Instant::now();
        loop {
            let leaders: Vec<Option<u64>> = ids
                .iter()
                .map(|id| self.nodes[id].status().leader_id)
                .collect();
            if let Some(Some(leader)) = leaders.first() {
                if ids.contains(leader)
                    && leaders.iter().all(|l| *l == Some(*leader))
                    && self.nodes[leader].is_leader()
                {
                    return *leader;
                }
            }
            assert!(
                started.elapsed() < within,
                "no common leader among {ids:?} within {within:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.stop(id).await;
        }
    }
}

fn register(i: u64) -> Command {
    Command::RegisterAgent {
        agent: Agent {
            id: format!("agent-{i}"),
            hostname: format!("a{i}.test"),
            url: format!("https://a{i}.test:5051"),
            resources: Resources {
                cpus_milli: 1_000,
                mem_mib: 1_024,
                disk_mib: 1_024,
            },
            state: AgentState::Active,
            registered_at_ms: i,
            ports: vec![],
            certificate: None,
            certificate_serial: None,
            version: String::new(),
            images: Default::default(),
            attributes: Default::default(),
        },
    }
}

fn agents_on(node: &ReplicatedState) -> Vec<String> {
    node.read(|s| s.agents.keys().cloned().collect())
}

/// Waits until every given node has applied at least `index`.
async fn applied_everywhere(cluster: &Cluster, ids: &[u64], index: u64) {
    let started = Instant::now();
    while ids
        .iter()
        .any(|id| cluster.nodes[id].status().commit_index < index)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "index {index} not applied on all of {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_elect_one_leader_replicate_and_redirect() {
    let cluster = Cluster::new(&[1, 2, 3]).await;
    let leader = cluster
        .leader_among(&[1, 2, 3], Duration::from_secs(10))
        .await;
    for i in 0..20 {
        let outcome = cluster.nodes[&leader].write(register(i)).await.unwrap();
        assert_eq!(outcome, Outcome::Applied);
    }
    let index = cluster.nodes[&leader].status().commit_index;
    applied_everywhere(&cluster, &[1, 2, 3], index).await;
    let expected = agents_on(&cluster.nodes[&leader]);
    assert_eq!(expected.len(), 20);
    for id in [1, 2, 3] {
        assert_eq!(agents_on(&cluster.nodes[&id]), expected, "node {id}");
    }

    // A follower refuses writes and names the leader, with its address, for a redirect.
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    match cluster.nodes[&follower].write(register(99)).await {
        Err(RaftError::NotLeader {
            leader_id,
            leader_addr,
        }) => {
            assert_eq!(leader_id, Some(leader));
            assert_eq!(leader_addr, Some(addr(leader)));
        }
        other => panic!("a follower must redirect, got {other:?}"),
    }
    let status = cluster.nodes[&leader].status();
    assert_eq!(status.members.len(), 3);
    assert!(status
        .members
        .iter()
        .all(|m| m.lag.is_some() && m.role != "learner"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::new(&[1, 2, 3]).await;
    let old = cluster
        .leader_among(&[1, 2, 3], Duration::from_secs(10))
        .await;
    let mut acknowledged = Vec::new();
    for i in 0..10 {
        cluster.nodes[&old].write(register(i)).await.unwrap();
        acknowledged.push(format!("agent-{i}"));
    }
    cluster.stop(old).await;
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != old).collect();
    let stopped = Instant::now();
    let new = cluster.leader_among(&rest, Duration::from_secs(5)).await;
    let took = stopped.elapsed();
    assert_ne!(new, old);
    cluster.nodes[&new].write(register(100)).await.unwrap();
    for id in &rest {
        let agents = agents_on(&cluster.nodes[id]);
        for a in &acknowledged {
            assert!(agents.contains(a), "node {id} lost acknowledged {a}");
        }
    }
    eprintln!("failover (test timings: 200-400 ms election timeout): {took:?}");

    // The old leader comes back as a follower and catches up.
    cluster.start(old, &[1, 2, 3]).await;
    let index = cluster.nodes[&new].status().commit_index;
    applied_everywhere(&cluster, &[1, 2, 3], index).await;
    assert!(agents_on(&cluster.nodes[&old]).contains(&"agent-100".to_string()));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_cannot_commit_and_the_majority_goes_on() {
    let cluster = Cluster::new(&[1, 2, 3]).await;
    let old = cluster
        .leader_among(&[1, 2, 3], Duration::from_secs(10))
        .await;
    cluster.nodes[&old].write(register(0)).await.unwrap();
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != old).collect();
    for other in &rest {
        cluster.net.partition(&addr(old), &addr(*other));
    }
    let new = cluster.leader_among(&rest, Duration::from_secs(10)).await;
    cluster.nodes[&new].write(register(1)).await.unwrap();
    // Past its lease the old leader stops leading, though openraft still calls it leader.
    let started = Instant::now();
    while cluster.nodes[&old].is_leader() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the cut-off leader kept its lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The isolated old leader never commits: its write times out or is redirected.
    let isolated = cluster.nodes[&old].clone();
    let write = tokio::spawn(async move { isolated.write(register(2)).await });
    let result = write.await.unwrap();
    assert!(
        matches!(result, Err(RaftError::NotLeader { .. })),
        "an isolated leader must not acknowledge: {result:?}"
    );

    cluster.net.heal();
    let index = cluster.nodes[&new].status().commit_index;
    applied_everywhere(&cluster, &[1, 2, 3], index).await;
    // One history: agent-2 (never acknowledged) is nowhere, agent-1 is everywhere.
    for id in [1, 2, 3] {
        let agents = agents_on(&cluster.nodes[&id]);
        assert!(agents.contains(&"agent-1".to_string()), "node {id}");
        assert!(!agents.contains(&"agent-2".to_string()), "node {id}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_are_added_promoted_and_removed_at_runtime_and_catch_up_by_snapshot() {
    let mut cluster = Cluster::new(&[1, 2, 3]).await;
    let leader = cluster
        .leader_among(&[1, 2, 3], Duration::from_secs(10))
        .await;
    // Enough writes for snapshots (every 100 entries) and a purged log.
    for i in 0..250 {
        cluster.nodes[&leader]
            .write(register(i % 50))
            .await
            .unwrap();
    }
    let started = Instant::now();
    while cluster.nodes[&leader].status().purged_index.is_none() {
        assert!(started.elapsed() < Duration::from_secs(10), "no purge");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Two new masters start empty and are added as learners, then promoted.
    for id in [4, 5] {
        cluster.start(id, &[]).await;
        cluster.nodes[&leader]
            .add_learner(id, &addr(id))
            .await
            .unwrap();
        cluster.nodes[&leader].promote(id).await.unwrap();
    }
    let status = cluster.nodes[&leader].status();
    let roles: BTreeMap<u64, String> = status
        .members
        .iter()
        .map(|m| (m.node_id, m.role.clone()))
        .collect();
    assert_eq!(roles.len(), 5, "{roles:?}");
    assert!(roles.values().all(|r| r != "learner"), "{roles:?}");
    let index = status.commit_index;
    applied_everywhere(&cluster, &[1, 2, 3, 4, 5], index).await;
    // The leader had no log left from index 1, so the new masters were sent a snapshot.
    assert!(cluster.nodes[&4].status().snapshot_index.is_some());
    assert_eq!(
        agents_on(&cluster.nodes[&4]),
        agents_on(&cluster.nodes[&leader])
    );

    // Remove a follower; one leader remains and the state is the same everywhere.
    let removed = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    cluster.nodes[&leader].remove_member(removed).await.unwrap();
    cluster.stop(removed).await;
    let rest: Vec<u64> = [1, 2, 3, 4, 5]
        .into_iter()
        .filter(|id| *id != removed)
        .collect();
    let leader = cluster.leader_among(&rest, Duration::from_secs(10)).await;
    cluster.nodes[&leader].write(register(77)).await.unwrap();
    let index = cluster.nodes[&leader].status().commit_index;
    applied_everywhere(&cluster, &rest, index).await;
    assert_eq!(cluster.nodes[&leader].status().members.len(), 4);
    for id in &rest {
        assert_eq!(
            agents_on(&cluster.nodes[id]),
            agents_on(&cluster.nodes[&leader])
        );
    }

    // Refusals name the reason.
    let error = cluster.nodes[&leader].remove_member(42).await.unwrap_err();
    assert!(error.to_string().contains("not a member"), "{error}");
    let error = cluster.nodes[&leader]
        .add_learner(4, "https://elsewhere:5050")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("already a member"), "{error}");
    cluster.shutdown().await;
}

/// A master that cannot be reached is not added: the learner is forgotten after the
/// catch-up wait instead of being promoted (a dead voter would take the quorum with it),
/// and the cluster writes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_master_is_not_added_and_the_cluster_writes_on() {
    let cluster = Cluster::new(&[1]).await;
    let leader = cluster.leader_among(&[1], Duration::from_secs(10)).await;
    cluster.nodes[&leader].write(register(1)).await.unwrap();
    let error = cluster.nodes[&leader]
        .add_learner(7, "https://nowhere:5050")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("did not catch up"), "{error}");
    assert!(error.to_string().contains("not added"), "{error}");
    let status = cluster.nodes[&leader].status();
    assert!(status.members.iter().all(|m| m.node_id != 7), "{status:?}");
    cluster.nodes[&leader].write(register(2)).await.unwrap();
    cluster.shutdown().await;
}
