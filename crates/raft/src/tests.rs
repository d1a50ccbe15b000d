//! Tests of the redb store and of `ReplicatedState` on a real data dir (tempfile): openraft's
//! storage suite, restart equality, snapshot-bounded logs, and durability of acknowledged
//! writes across a drop without shutdown and across `kill -9` of a child process.
//!
//! Not covered here: power loss (fsync itself) and multi-master behaviour.

use crate::db::{self, SNAPSHOT_META, SNAPSHOT_TABLE};
use crate::log_store::LogStore;
use crate::state_machine::StateMachineStore;
use crate::{RaftError, RaftOptions, ReplicatedState, TypeConfig};
use dcos_core::{Agent, AgentState, AppSpec, ClusterState, Command, Outcome, Reject, Resources};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use std::path::Path;
use tempfile::TempDir;

fn agent(id: &str) -> Agent {
    Agent {
        id: id.to_string(),
        hostname: format!("{id}.example"),
        url: format!("http://{id}.example:5051"),
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
    }
}

fn app(id: &str, instances: u32) -> AppSpec {
    let mut spec: AppSpec = serde_json::from_value(serde_json::json!({
        "id": id, "cmd": "sleep 100", "cpus": 0.5, "mem": 64, "instances": instances
    }))
    .expect("valid app json");
    spec.normalize_and_validate().expect("valid app");
    spec
}

/// A deterministic mix of commands: agents, app creations and app updates.
fn command(i: u64) -> Command {
    match i % 3 {
        0 => Command::RegisterAgent {
            agent: agent(&format!("agent-{i}")),
        },
        1 => Command::PutApp {
            app: app(&format!("/app-{i}"), 1),
            create: true,
            at_ms: 1_000 + i,
            deployment_id: format!("d-{i}"),
        },
        _ => Command::PutApp {
            app: app(&format!("/app-{}", i - 1), 3),
            create: false,
            at_ms: 1_000 + i,
            deployment_id: format!("d-{i}"),
        },
    }
}

fn opts(dir: &Path) -> RaftOptions {
    RaftOptions::single(dir, "127.0.0.1:5050")
}

async fn write_commands(state: &ReplicatedState, range: std::ops::Range<u64>) {
    for i in range {
        let outcome = state.write(command(i)).await.expect("write");
        assert_eq!(outcome, Outcome::Applied, "command {i}");
    }
}

fn snapshot_of(state: &ReplicatedState) -> ClusterState {
    state.read(|s| s.clone())
}

fn log_entries_on_disk(dir: &Path) -> u64 {
    crate::log_store::entries_on_disk(dir)
}

struct WalStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for WalStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = TempDir::new().expect("temp dir");
        let db = db::open(dir.path()).expect("open db");
        let state_machine = StateMachineStore::open(db.clone()).expect("open state machine");
        let log_store = LogStore::open(db, dir.path()).expect("open log");
        Ok((dir, log_store, state_machine))
    }
}

#[test]
fn storage_suite_passes_against_the_wal_and_redb_store() {
    // The suite builds its own tokio runtimes, so this is a plain test.
    Suite::test_all(WalStoreBuilder).expect("openraft storage suite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_kept_its_log_in_redb_is_moved_into_the_wal() {
    let dir = TempDir::new().unwrap();
    let state = ReplicatedState::open_single(opts(dir.path()))
        .await
        .unwrap();
    write_commands(&state, 0..30).await;
    let before = snapshot_of(&state);
    state.shutdown().await.unwrap();
    drop(state);
    // As an interrupted move would leave it: every row in redb, a prefix in the WAL.
    crate::log_store::rewrite_as_redb_log(dir.path(), 10);
    assert!(crate::log_store::redb_log_rows(dir.path()) >= 30);

    let state = ReplicatedState::open_single(opts(dir.path()))
        .await
        .unwrap();
    assert_eq!(
        snapshot_of(&state),
        before,
        "every entry was replayed from the moved log"
    );
    write_commands(&state, 30..31).await;
    state.shutdown().await.unwrap();
    drop(state);
    assert_eq!(crate::log_store::redb_log_rows(dir.path()), 0);
    assert!(log_entries_on_disk(dir.path()) >= 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_shutdown_and_reopen() {
    let dir = TempDir::new().unwrap();
    let state = ReplicatedState::open_single(opts(dir.path()))
        .await
        .unwrap();
    assert!(state.is_leader());
    write_commands(&state, 0..30).await;

    // A business refusal is a replicated outcome, not an error.
    let duplicate = state
        .write(Command::PutApp {
            app: app("/app-1", 1),
            create: true,
            at_ms: 9_999,
            deployment_id: "dup".to_string(),
        })
        .await
        .unwrap();
    assert_eq!(
        duplicate,
        Outcome::Rejected(Reject::AppExists {
            app_id: "/app-1".to_string()
        })
    );

    let before = snapshot_of(&state);
    let status_before = state.status();
    assert_eq!(before.agents.len(), 10);
    assert_eq!(before.services.apps.len(), 10);
    state.shutdown().await.unwrap();
    assert!(matches!(
        state.write(command(100)).await,
        Err(RaftError::Fatal(_))
    ));

    let reopened = ReplicatedState::open_single(opts(dir.path()))
        .await
        .unwrap();
    assert_eq!(snapshot_of(&reopened), before);
    let status_after = reopened.status();
    assert_eq!(status_after.role, "leader");
    assert_eq!(status_after.leader_id, Some(1));
    assert!(status_after.last_log_index >= status_before.last_log_index);
    assert_eq!(status_after.commit_index, status_after.last_log_index);
    reopened.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_log_and_restore_the_state() {
    let dir = TempDir::new().unwrap();
    let small_policy = RaftOptions {
        snapshot_logs_since_last: 10,
        max_in_snapshot_log_to_keep: 5,
        ..opts(dir.path())
    };
    let state = ReplicatedState::open_single(small_policy.clone())
        .await
        .unwrap();
    write_commands(&state, 0..100).await;
    let before = snapshot_of(&state);
    state.shutdown().await.unwrap();

    let entries = log_entries_on_disk(dir.path());
    eprintln!("log entries on disk after 100 writes (snapshot every 10, keep 5): {entries}");
    assert!(
        entries < 30,
        "the log should be purged behind snapshots, found {entries} entries"
    );
    {
        let db = db::open(dir.path()).unwrap();
        let snapshot: Option<openraft::SnapshotMeta<u64, openraft::BasicNode>> =
            db::read_json(&db, SNAPSHOT_TABLE, SNAPSHOT_META).unwrap();
        let snapshot = snapshot.expect("a snapshot was stored");
        assert!(snapshot.last_log_id.expect("snapshot has a log id").index >= 90);
    }

    let reopened = ReplicatedState::open_single(small_policy).await.unwrap();
    assert_eq!(snapshot_of(&reopened), before);
    // And it keeps working after a restore.
    write_commands(&reopened, 100..130).await;
    let expected = {
        let mut expected = before;
        for i in 100..130 {
            expected.apply(&command(i));
        }
        expected
    };
    assert_eq!(snapshot_of(&reopened), expected);
    reopened.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_drop_without_shutdown() {
    let dir = TempDir::new().unwrap();
    let state = ReplicatedState::open_single(opts(dir.path()))
        .await
        .unwrap();
    write_commands(&state, 0..20).await;
    let before = snapshot_of(&state);
    drop(state);

    // `open_single` waits while the dropped node's tasks still hold the file.
    let reopened = ReplicatedState::open_single(opts(dir.path()))
        .await
        .unwrap();
    assert_eq!(snapshot_of(&reopened), before);
    reopened.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_the_applied_index() {
    let dir = TempDir::new().unwrap();
    let state = ReplicatedState::open_single(opts(dir.path()))
        .await
        .unwrap();
    let mut applied = state.subscribe();
    let start = *applied.borrow_and_update();
    write_commands(&state, 0..3).await;
    assert!(applied.has_changed().unwrap());
    assert_eq!(*applied.borrow_and_update(), start + 3);
    assert_eq!(state.status().commit_index, start + 3);
    state.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_another_node_is_refused() {
    let dir = TempDir::new().unwrap();
    let state = ReplicatedState::open_single(opts(dir.path()))
        .await
        .unwrap();
    state.shutdown().await.unwrap();
    let other_node = RaftOptions {
        node_id: 2,
        ..opts(dir.path())
    };
    let error = ReplicatedState::open_single(other_node)
        .await
        .err()
        .expect("node 2 must not take over node 1's data dir");
    assert!(matches!(error, RaftError::Config(_)), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_log_entries_and_each_gets_its_own_outcome() {
    let dir = TempDir::new().unwrap();
    let state = ReplicatedState::open_single(opts(dir.path()))
        .await
        .unwrap();
    let before = state.status().last_log_index;
    // 300 writes at once: 200 distinct agents, and 100 creations of one app, of which exactly
    // one may succeed.
    let writes = (0..300).map(|i| {
        let state = state.clone();
        tokio::spawn(async move {
            let command = if i < 200 {
                Command::RegisterAgent {
                    agent: agent(&format!("agent-{i}")),
                }
            } else {
                Command::PutApp {
                    app: app("/one", 1),
                    create: true,
                    at_ms: i,
                    deployment_id: format!("d-{i}"),
                }
            };
            (i, state.write(command).await.unwrap())
        })
    });
    let outcomes = futures_join(writes).await;
    for (i, outcome) in &outcomes {
        if *i < 200 {
            assert_eq!(*outcome, Outcome::Applied, "write {i}");
        }
    }
    let created = outcomes
        .iter()
        .filter(|(i, o)| *i >= 200 && *o == Outcome::Applied)
        .count();
    let refused = outcomes
        .iter()
        .filter(|(i, o)| *i >= 200 && matches!(o, Outcome::Rejected(Reject::AppExists { .. })))
        .count();
    assert_eq!((created, refused), (1, 99));
    assert_eq!(state.read(|s| s.agents.len()), 200);
    let entries = state.status().last_log_index - before;
    assert!(
        entries < 300,
        "300 concurrent writes took {entries} log entries: no batching"
    );
    eprintln!("300 concurrent writes in {entries} log entries");
    state.shutdown().await.unwrap();
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await.unwrap());
    }
    out
}

/// A fixture of crates/core (see its tests/compat.rs): written by the previous format.
fn core_fixture(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../core/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn a_snapshot_of_the_previous_format_restores() {
    use crate::state_machine::{decode_snapshot, AppliedState, Meta};
    // The snapshot envelope is openraft's and unchanged; its state is the old format's.
    let applied = AppliedState::default();
    let meta = Meta {
        last_log_id: applied.last_applied,
        last_membership: applied.last_membership.clone(),
        snapshot_id: "v1".into(),
    };
    let mut data = serde_json::to_value(&applied).unwrap();
    data["state"] = core_fixture("v1-state.json");
    let restored = decode_snapshot(&meta, &serde_json::to_vec(&data).unwrap()).unwrap();
    assert_eq!(
        restored.state.services.apps.keys().collect::<Vec<_>>(),
        vec!["/db"]
    );
    assert_eq!(
        restored.state.tasks["t4"].owner.service_app(),
        Some("/db"),
        "old tasks are service instances"
    );
}

#[test]
fn log_entries_of_the_previous_format_decode_and_apply() {
    let old_commands = core_fixture("v1-log.json");
    let template = openraft::Entry::<TypeConfig> {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 1),
        payload: openraft::EntryPayload::Normal(Command::Batch(vec![])),
    };
    let mut state = ClusterState::default();
    for (i, command) in old_commands.as_array().unwrap().iter().enumerate() {
        // Each old command in the entry encoding the log store writes (serde_json).
        let mut entry = serde_json::to_value(&template).unwrap();
        entry["payload"]["Normal"] = command.clone();
        let decoded: openraft::Entry<TypeConfig> =
            serde_json::from_slice(&serde_json::to_vec(&entry).unwrap())
                .unwrap_or_else(|e| panic!("entry {i}: {e}"));
        let openraft::EntryPayload::Normal(command) = decoded.payload else {
            panic!("entry {i} is not a normal entry");
        };
        state.apply_entry(&command);
    }
    let snapshot_then: ClusterState =
        serde_json::from_value(core_fixture("v1-state.json")).unwrap();
    // App history kept since (versions, lastScalingAt, the creation time) is rebuilt by the
    // replay but was never in the old snapshot (crates/core/tests/compat.rs).
    for record in state.services.apps.values_mut() {
        record.versions.clear();
        record.last_scaling_ms = 0;
        record.created_ms = 0;
    }
    assert_eq!(state, snapshot_then);
}

/// A command larger than a log entry may be is refused before it reaches the log (a
/// follower could never accept it), and the writes after it go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_too_large_for_an_entry_is_refused_and_nothing_stalls() {
    let dir = TempDir::new().unwrap();
    let state = ReplicatedState::open_single(opts(dir.path()))
        .await
        .unwrap();
    let mut big = app("/big", 1);
    big.env.insert(
        "BLOB".to_string(),
        "x".repeat(crate::batch::ENTRY_MAX_BYTES),
    );
    let refused = state
        .write(Command::PutApp {
            app: big,
            create: true,
            at_ms: 1,
            deployment_id: "d-big".to_string(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(refused, RaftError::TooLarge { max, .. } if max == crate::batch::ENTRY_MAX_BYTES),
        "{refused}"
    );
    write_commands(&state, 0..3).await;
    assert_eq!(snapshot_of(&state).services.apps.len(), 1);
    state.shutdown().await.unwrap();
}

/// A tmpfs of a few MiB mounted for one test and unmounted when dropped: a disk that fills.
/// `None` (the test then says it did not run) without root, which mounting needs.
struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    fn mount(mib: u64) -> Option<SmallDisk> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a small tmpfs needs root");
            return None;
        }
        let dir = TempDir::new().unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs on {}", dir.path().display());
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk up to its last byte with a file `fill` that `free` removes.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.path().join("fill")).unwrap();
        let chunk = vec![1u8; 64 << 10];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if crate::space::is_out_of_space(&e) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        assert!(crate::space::available_bytes(self.path()).unwrap() < 64 << 10);
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("fill")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// An app whose definition takes about `kib` KiB of the log.
fn bulky_app(id: &str, kib: usize) -> Command {
    let mut spec = app(id, 1);
    spec.env.insert("BLOB".to_string(), "x".repeat(kib << 10));
    Command::PutApp {
        app: spec,
        create: true,
        at_ms: 1,
        deployment_id: format!("d{id}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_and_they_resume_once_space_is_freed() {
    let Some(disk) = SmallDisk::mount(48) else {
        return;
    };
    let data = disk.path().join("data");
    let options = RaftOptions {
        min_free_bytes: 8 << 20,
        ..opts(&data)
    };
    let state = ReplicatedState::open_single(options.clone()).await.unwrap();
    write_commands(&state, 0..3).await;

    disk.fill();
    let refused = state.write(command(3)).await.unwrap_err();
    let RaftError::DiskFull(reason) = &refused else {
        panic!("expected a disk-full refusal, got {refused:?}");
    };
    assert!(reason.contains(&data.display().to_string()), "{reason}");
    assert!(reason.contains("MiB free"), "{reason}");
    assert_eq!(
        snapshot_of(&state).services.apps.len(),
        1,
        "nothing applied"
    );

    disk.free();
    write_commands(&state, 3..6).await;
    let expected = snapshot_of(&state);
    state.shutdown().await.unwrap();
    let reopened = ReplicatedState::open_single(options).await.unwrap();
    assert_eq!(snapshot_of(&reopened), expected);
    reopened.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_find_the_disk_full_wait_for_space_and_the_log_is_not_broken() {
    // Room, once freed, for two log segments and redb with a few snapshots of 20 MiB.
    let Some(disk) = SmallDisk::mount(256) else {
        return;
    };
    let data = disk.path().join("data");
    // No refusal up front: the writes reach the log, which must find the disk full when
    // it needs its next segment, and redb, when a snapshot grows its file.
    let options = RaftOptions {
        min_free_bytes: 0,
        snapshot_logs_since_last: 8,
        ..opts(&data)
    };
    let state = ReplicatedState::open_single(options.clone()).await.unwrap();
    disk.fill();
    // 20 entries of 1 MiB do not fit the preallocated 16 MiB segment.
    let writer = {
        let state = state.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                let outcome = state.write(bulky_app(&format!("/bulky-{i}"), 1024)).await;
                assert_eq!(outcome.expect("write"), Outcome::Applied, "write {i}");
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(!writer.is_finished(), "the writes waited for space");
    let waiting = snapshot_of(&state).services.apps.len();
    assert!(waiting < 20, "{waiting} apps applied on a full disk");

    disk.free();
    tokio::time::timeout(std::time::Duration::from_secs(30), writer)
        .await
        .expect("the writes went on once space returned")
        .expect("every write applied");
    write_commands(&state, 0..2).await;
    let expected = snapshot_of(&state);
    assert_eq!(expected.services.apps.len(), 21);
    state.shutdown().await.unwrap();
    let reopened = ReplicatedState::open_single(options).await.unwrap();
    assert_eq!(snapshot_of(&reopened), expected);
    reopened.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_hear_every_applied_command_in_log_order_with_its_outcome() {
    let dir = TempDir::new().unwrap();
    let state = ReplicatedState::open_single(opts(dir.path()))
        .await
        .unwrap();
    let mut heard = state.subscribe_commands();
    // Concurrent writes share entries: the listener still gets them one by one.
    // (Agents and app creations: independent of their order.)
    let writes = [0u64, 1, 3, 4, 6, 7].into_iter().map(|i| {
        let state = state.clone();
        tokio::spawn(async move { state.write(command(i)).await.unwrap() })
    });
    futures_join(writes).await;
    let duplicate = state.write(command(1)).await.unwrap();
    assert!(matches!(
        duplicate,
        Outcome::Rejected(Reject::AppExists { .. })
    ));
    let mut got = Vec::new();
    while got.len() < 7 {
        got.push(heard.recv().await.unwrap());
    }
    let indexes: Vec<u64> = got.iter().map(|a| a.index).collect();
    assert!(indexes.windows(2).all(|w| w[0] <= w[1]), "{indexes:?}");
    assert_eq!(got[6].command, command(1));
    assert!(matches!(
        got[6].outcome,
        Outcome::Rejected(Reject::AppExists { .. })
    ));
    assert!(got[..6].iter().all(|a| a.outcome == Outcome::Applied));
    state.shutdown().await.unwrap();
}
