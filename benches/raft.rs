//! `make bench-raft`: replicated writes per second, 3 dcos-rs masters vs a 3-member etcd
//! 3.4 cluster, with 1, 100 and 1000 concurrent clients (output format: ARCHITECTURE.md, Benchmarks).
//!
//! Both clusters run on the same three hosts of the e2e harness (network namespaces on one
//! bridge, e2e/net.rs), one after the other, never at once: first the dcos-rs masters
//! (started by e2e/cluster.rs with the Raft defaults), then, once those are killed, etcd
//! members on the same addresses. Both speak HTTPS with mutual TLS, with certificates from
//! the same cluster CA (`dcos-rs cluster issue-cert`), between members and to clients.
//!
//! The load is the same client code for both: one `NodeClient` (HTTP/1.1, rustls) and thus
//! one keep-alive connection per simulated client, each client sending its next write as
//! soon as the previous one is answered, all to the leader:
//! - dcos-rs: `PUT /v2/apps/c<i> {"instances":0}` (a Raft write of a scale that does not
//!   grow the state; every client has its own app, created before the clock starts);
//! - etcd: `POST /v3/kv/put` on its JSON gateway, key `c<i>`, a 64-byte value.
//!
//! A level runs `DCOS_BENCH_WARMUP_SECS` (default 3) unrecorded, then counts the writes
//! answered with success within `DCOS_BENCH_WINDOW_SECS` (default 10). Every other answer
//! is counted as an error and reported. Comment lines add, per level, the p50/p99 latency,
//! the CPU time (user + system) the three members and this process (the clients) used per
//! write in the window, and how busy the machine's CPUs were: on a small machine the higher
//! levels are CPU-bound, and CPU per write is what decides them.
//!
//! Not measured: reads, large entries, disk-bound cases beyond what fsync on this machine's
//! disk costs both.
//!
//! Needs root (namespaces) and etcd 3.4 (`apt-get install -y etcd-server`).

#[path = "../e2e/net.rs"]
#[allow(dead_code)]
mod net;

#[path = "../e2e/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[allow(dead_code)] // each benchmark uses part of it
mod common;

use cluster::{master_url, Cluster, BIN};
use dcos_rs::tls::{client_config, NodeClient, TlsFiles};
// The etcd gateway encodes bytes fields in standard base64.
use dcos_runtime::image::registry::base64;
use hyper::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MASTERS: [u32; 3] = [1, 2, 3];
/// Concurrent clients per level, unless `DCOS_BENCH_CLIENTS` (e.g. `1,100`) names others.
const LEVELS: [usize; 3] = [1, 100, 1000];
const ETCD_CLIENT_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;
/// etcd's value size. The command one of our scale writes puts in the Raft log is larger
/// (a JSON `ScaleApp` of well over 100 bytes), so the sizes do not favour us.
const ETCD_VALUE_BYTES: usize = 64;
/// One write's answer must come within this; a slower one counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const RESPONSE_MAX_BYTES: usize = 1 << 20;
/// Apps created at once while preparing (the creation is not measured).
const SETUP_CONCURRENCY: usize = 50;
/// A failing client waits this long before its next attempt (no busy loop on errors).
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// File descriptors needed: 1000 client connections here, as many accepted per master.
const NOFILE_MIN: u64 = 4096;

fn main() {
    raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // A panic unwinds through `run`: the etcd members and the cluster are dropped (killed).
    runtime.block_on(run());
}

/// What one level of one system measured.
struct Level {
    clients: usize,
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
    first_error: Option<String>,
    /// CPU time (user + system) of the three members per write in the window.
    members_cpu_ms_per_write: f64,
    /// CPU time of this process (the clients) per write in the window.
    clients_cpu_ms_per_write: f64,
    /// Share of the machine's CPU time that was busy in the window (all processes).
    machine_busy_percent: f64,
}

/// How to send one client's write to one system.
#[derive(Clone)]
struct Target {
    method: Method,
    /// The leader's base URL.
    base: String,
    /// Which API the writes go to (see `Target::request`).
    system: System,
    headers: HeaderMap,
    tls: TlsFiles,
    /// The members' processes, for their CPU time.
    pids: Vec<i32>,
}

#[derive(Clone, Copy, PartialEq)]
enum System {
    Dcos,
    Etcd,
}

impl Target {
    fn request(&self, client: usize) -> (String, Vec<u8>) {
        match self.system {
            System::Dcos => (
                format!("{}/v2/apps/c{client}", self.base),
                br#"{"instances":0}"#.to_vec(),
            ),
            System::Etcd => {
                let value = format!("{client:0>width$}", width = ETCD_VALUE_BYTES);
                let body = json!({
                    "key": base64(format!("c{client}").as_bytes()),
                    "value": base64(value.as_bytes()),
                });
                (
                    format!("{}/v3/kv/put", self.base),
                    body.to_string().into_bytes(),
                )
            }
        }
    }
}

async fn run() {
    let warmup = Duration::from_secs(common::env_number("DCOS_BENCH_WARMUP_SECS", 3));
    let window = Duration::from_secs(common::env_number("DCOS_BENCH_WINDOW_SECS", 10));
    let levels = levels();
    let etcd_version = etcd_version();
    let load_before = common::loadavg();

    let mut cluster = Cluster::new(3);
    for host in MASTERS {
        cluster.start_master(host, &MASTERS).await;
    }
    let leader = cluster.leader(&MASTERS, Duration::from_secs(20)).await;
    let dir = cluster.dir.path().to_path_buf();
    let admin_tls = cluster.admin_tls();
    let mut headers = HeaderMap::new();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    let mut dcos_headers = headers.clone();
    dcos_headers.insert(
        hyper::header::AUTHORIZATION,
        format!("Bearer {}", cluster.token()).parse().unwrap(),
    );
    let clients_max = *levels.iter().max().unwrap();
    create_apps(&cluster, leader, clients_max).await;
    let still = cluster.leader(&MASTERS, Duration::from_secs(5)).await;
    assert_eq!(
        still, leader,
        "the leader changed while the apps were created"
    );
    let dcos = Target {
        method: Method::PUT,
        base: master_url(leader),
        system: System::Dcos,
        headers: dcos_headers,
        tls: admin_tls.clone(),
        pids: MASTERS.iter().map(|h| cluster.pid(*h)).collect(),
    };
    let mut ours = Vec::new();
    for &clients in &levels {
        ours.push(run_level(&dcos, clients, warmup, window).await);
        progress("dcos-rs", ours.last().unwrap());
    }
    let leader_after = cluster.leader(&MASTERS, Duration::from_secs(5)).await;
    for host in MASTERS {
        cluster.kill(host);
    }

    // etcd on the same hosts, addresses and certificates authority.
    let etcd = EtcdMembers::start(&cluster, &dir);
    let etcd_leader = etcd.wait_leader(&admin_tls).await;
    let etcd_target = Target {
        method: Method::POST,
        base: etcd_url(etcd_leader),
        system: System::Etcd,
        headers,
        tls: admin_tls.clone(),
        pids: etcd.children.iter().map(|c| c.id() as i32).collect(),
    };
    let mut theirs = Vec::new();
    for &clients in &levels {
        theirs.push(run_level(&etcd_target, clients, warmup, window).await);
        progress("etcd", theirs.last().unwrap());
    }
    let etcd_leader_after = etcd.wait_leader(&admin_tls).await;
    drop(etcd);
    drop(cluster);
    let load_after = common::loadavg();

    println!(
        "# bench-raft: 3 members on hosts {} (network namespaces on one bridge), HTTPS with mutual TLS, \
         one connection per client, writes to the leader; {}s warm-up + {}s window per level",
        MASTERS.map(net::address).join(", "),
        warmup.as_secs(),
        window.as_secs()
    );
    println!("# dcos-rs: {BIN} master, Raft defaults; PUT /v2/apps/c<i> {{\"instances\":0}}");
    println!(
        "# peer: {etcd_version}, default heartbeat/election; POST /v3/kv/put (JSON gateway), {ETCD_VALUE_BYTES}-byte values"
    );
    println!(
        "# leaders: dcos-rs master {leader} (still {leader_after} after), etcd member {etcd_leader} (still {etcd_leader_after} after)"
    );
    println!("# load average before: {load_before}; after: {load_after}");
    println!(
        "# system  clients    ops/s  p50 ms  p99 ms  errors  members_cpu_ms/write  clients_cpu_ms/write  machine_busy_%"
    );
    for (name, levels) in [("dcos-rs", &ours), ("etcd", &theirs)] {
        for level in levels.iter() {
            println!(
                "# {name:<7} {:>7} {:>8.0} {:>7.2} {:>7.2} {:>7} {:>21.3} {:>21.3} {:>15.0}",
                level.clients,
                level.ops_per_s,
                level.p50_ms,
                level.p99_ms,
                level.errors,
                level.members_cpu_ms_per_write,
                level.clients_cpu_ms_per_write,
                level.machine_busy_percent
            );
            if let Some(error) = &level.first_error {
                println!("#   first error: {error}");
            }
        }
    }
    for (ours, theirs) in ours.iter().zip(&theirs) {
        println!(
            "BENCH raft_writes_c{} {:.0} ops/s peer=etcd:{:.0} ratio={:.2}",
            ours.clients,
            ours.ops_per_s,
            theirs.ops_per_s,
            ours.ops_per_s / theirs.ops_per_s
        );
    }
    let (ours_c1, theirs_c1) = (&ours[0], &theirs[0]);
    println!(
        "BENCH raft_write_latency_c{}_p50 {:.2} ms peer=etcd:{:.2} ratio={:.2}",
        ours_c1.clients,
        ours_c1.p50_ms,
        theirs_c1.p50_ms,
        ours_c1.p50_ms / theirs_c1.p50_ms
    );
}

/// The levels to run: `DCOS_BENCH_CLIENTS` as a comma-separated list, else `LEVELS`. The
/// first level is the one the latency line reports.
fn levels() -> Vec<usize> {
    let Ok(list) = std::env::var("DCOS_BENCH_CLIENTS") else {
        return LEVELS.to_vec();
    };
    let levels: Vec<usize> = list
        .split(',')
        .map(|n| match n.trim().parse() {
            Ok(n) if n > 0 => n,
            _ => panic!("DCOS_BENCH_CLIENTS={list:?}: {n:?} is not a positive whole number"),
        })
        .collect();
    assert!(!levels.is_empty(), "DCOS_BENCH_CLIENTS is empty");
    levels
}

fn progress(system: &str, level: &Level) {
    eprintln!(
        "bench-raft: {system}, {} clients: {:.0} ops/s, p50 {:.2} ms, {} errors",
        level.clients, level.ops_per_s, level.p50_ms, level.errors
    );
}

/// Apps `/c0` .. `/c<count-1>` with no instances, one per client.
async fn create_apps(cluster: &Cluster, leader: u32, count: usize) {
    let ids: Vec<usize> = (0..count).collect();
    for chunk in ids.chunks(SETUP_CONCURRENCY) {
        let creations = chunk.iter().map(|i| async move {
            let app = json!({ "id": format!("/c{i}"), "cmd": "true", "cpus": 0.01, "mem": 4, "instances": 0 });
            let answer = cluster.write(leader, Method::POST, "/v2/apps", &app).await;
            assert_eq!(answer.status, StatusCode::CREATED, "creating /c{i}: {}", answer.body);
        });
        futures_util::future::join_all(creations).await;
    }
}

/// Runs `clients` clients against `target` for the warm-up and the window.
async fn run_level(target: &Target, clients: usize, warmup: Duration, window: Duration) -> Level {
    let config = client_config(&target.tls).expect("the admin's TLS files");
    let launched = Instant::now();
    let start = launched + warmup;
    let end = start + window;
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let target = target.clone();
        let client = NodeClient::new(config.clone());
        tasks.push(tokio::spawn(client_loop(client, target, i, end)));
    }
    let own = [std::process::id() as i32];
    tokio::time::sleep_until(start.into()).await;
    let (members_before, own_before, machine_before) =
        (cpu_time(&target.pids), cpu_time(&own), machine_cpu());
    tokio::time::sleep_until(end.into()).await;
    let members_cpu = cpu_time(&target.pids) - members_before;
    let own_cpu = cpu_time(&own) - own_before;
    let machine_after = machine_cpu();
    let machine_busy_percent = 100.0 * (machine_after.0 - machine_before.0) as f64
        / (machine_after.1 - machine_before.1).max(1) as f64;
    let (mut done, mut latencies) = (0usize, Vec::new());
    let (mut errors, mut first_error) = (0usize, None);
    for task in tasks {
        let outcome = task.await.expect("a client task");
        for (sent, answered) in outcome.writes {
            if answered >= start && answered <= end {
                done += 1;
            }
            if sent >= start && answered <= end {
                latencies.push(answered - sent);
            }
        }
        errors += outcome.errors;
        first_error = first_error.or(outcome.first_error);
    }
    latencies.sort();
    let rank = |p: f64| {
        if latencies.is_empty() {
            return f64::NAN;
        }
        common::ms(common::rank(&latencies, p))
    };
    Level {
        clients,
        ops_per_s: done as f64 / window.as_secs_f64(),
        p50_ms: rank(50.0),
        p99_ms: rank(99.0),
        errors,
        first_error,
        members_cpu_ms_per_write: members_cpu.as_secs_f64() * 1000.0 / done.max(1) as f64,
        clients_cpu_ms_per_write: own_cpu.as_secs_f64() * 1000.0 / done.max(1) as f64,
        machine_busy_percent,
    }
}

/// CPU time (user + system, all threads) the processes `pids` have used so far.
fn cpu_time(pids: &[i32]) -> Duration {
    // SAFETY: sysconf reads a constant.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks: u64 = pids
        .iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The command name (field 2) may hold spaces: count fields after its ')'.
            let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the line.
            let field = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            field(11) + field(12)
        })
        .sum();
    Duration::from_secs_f64(ticks as f64 / ticks_per_s)
}

/// (busy, total) CPU ticks of the whole machine so far, from /proc/stat.
fn machine_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    // idle and iowait are the 4th and 5th values.
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

struct ClientOutcome {
    /// (sent, answered) of every successful write.
    writes: Vec<(Instant, Instant)>,
    errors: usize,
    first_error: Option<String>,
}

/// One client: a write, its answer, the next write, ... until `end`.
async fn client_loop(client: NodeClient, target: Target, i: usize, end: Instant) -> ClientOutcome {
    let (url, body) = target.request(i);
    let mut outcome = ClientOutcome {
        writes: Vec::new(),
        errors: 0,
        first_error: None,
    };
    while Instant::now() < end {
        let sent = Instant::now();
        let answer = client
            .request(
                target.method.clone(),
                &url,
                body.clone(),
                target.headers.clone(),
                REQUEST_TIMEOUT,
                RESPONSE_MAX_BYTES,
            )
            .await;
        let answered = Instant::now();
        let problem = match answer {
            Ok((StatusCode::OK, _, bytes)) => match target.system {
                // The gateway answers 200 with a JSON error body in some failure cases.
                System::Etcd if bytes.windows(7).any(|w| w == b"\"error\"") => {
                    Some(String::from_utf8_lossy(&bytes).into_owned())
                }
                _ => None,
            },
            Ok((status, _, bytes)) => {
                Some(format!("{status}: {}", String::from_utf8_lossy(&bytes)))
            }
            Err(e) => Some(format!("{url}: {e}")),
        };
        match problem {
            None => outcome.writes.push((sent, answered)),
            Some(problem) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert(problem);
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
    outcome
}

fn etcd_url(host: u32) -> String {
    format!("https://{}:{ETCD_CLIENT_PORT}", net::address(host))
}

/// Three etcd members on the hosts of the masters; killed when dropped.
struct EtcdMembers {
    children: Vec<Child>,
}

impl EtcdMembers {
    fn start(cluster: &Cluster, dir: &Path) -> EtcdMembers {
        let peer_url = |host: u32| format!("https://{}:{ETCD_PEER_PORT}", net::address(host));
        let initial: Vec<String> = MASTERS
            .iter()
            .map(|h| format!("e{h}={}", peer_url(*h)))
            .collect();
        let mut members = EtcdMembers {
            children: Vec::new(),
        };
        for host in MASTERS {
            let name = format!("etcd{host}");
            let issued = Command::new(BIN)
                .args(["cluster", "issue-cert", "--role", "master", "--name", &name])
                .args([
                    "--ca-dir",
                    "ca",
                    "--out",
                    &name,
                    "--san",
                    &net::address(host),
                ])
                .current_dir(dir)
                .output()
                .expect("running dcos-rs cluster issue-cert");
            assert!(
                issued.status.success(),
                "issue-cert for {name}: {}",
                String::from_utf8_lossy(&issued.stderr)
            );
            let home = dir.join(&name);
            let (cert, key, ca) = (
                home.join(format!("{name}.crt")),
                home.join(format!("{name}.key")),
                dir.join("ca/ca.crt"),
            );
            let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
            let mut command = Command::new("etcd");
            command
                .arg(format!("--name=e{host}"))
                .arg(format!("--data-dir={}", home.join("data").display()))
                .arg(format!("--listen-client-urls={}", etcd_url(host)))
                .arg(format!("--advertise-client-urls={}", etcd_url(host)))
                .arg(format!("--listen-peer-urls={}", peer_url(host)))
                .arg(format!("--initial-advertise-peer-urls={}", peer_url(host)))
                .arg(format!("--initial-cluster={}", initial.join(",")))
                .arg("--initial-cluster-state=new")
                .arg("--initial-cluster-token=dcos-rs-bench")
                .arg("--logger=zap")
                .arg("--log-level=warn")
                .arg(format!("--cert-file={}", cert.display()))
                .arg(format!("--key-file={}", key.display()))
                .arg("--client-cert-auth")
                .arg(format!("--trusted-ca-file={}", ca.display()))
                .arg(format!("--peer-cert-file={}", cert.display()))
                .arg(format!("--peer-key-file={}", key.display()))
                .arg("--peer-client-cert-auth")
                .arg(format!("--peer-trusted-ca-file={}", ca.display()))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            // The namespace's fd must stay open until the spawn (setns runs in the child).
            let namespace = cluster.net().namespace_file(host);
            net::enter_before_exec(&mut command, &namespace);
            members.children.push(
                command
                    .spawn()
                    .expect("starting etcd (apt-get install -y etcd-server)"),
            );
            drop(namespace);
        }
        members
    }

    /// The host whose member leads, once all three answer and agree.
    async fn wait_leader(&self, tls: &TlsFiles) -> u32 {
        let client = NodeClient::new(client_config(tls).unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut statuses = Vec::new();
            for host in MASTERS {
                let answer = client
                    .request(
                        Method::POST,
                        &format!("{}/v3/maintenance/status", etcd_url(host)),
                        b"{}".to_vec(),
                        HeaderMap::new(),
                        Duration::from_secs(2),
                        RESPONSE_MAX_BYTES,
                    )
                    .await;
                let status: Option<Value> = answer
                    .ok()
                    .filter(|(code, _, _)| *code == StatusCode::OK)
                    .and_then(|(_, _, body)| serde_json::from_slice(&body).ok());
                statuses.push((host, status));
            }
            let leaders: Vec<Option<&Value>> = statuses
                .iter()
                .map(|(_, s)| s.as_ref().map(|s| &s["leader"]))
                .collect();
            let agreed = leaders
                .iter()
                .all(|l| l.is_some_and(|l| !l.is_null() && l != "0" && Some(l) == leaders[0]));
            if agreed {
                let leader = leaders[0].unwrap();
                let host = statuses
                    .iter()
                    .find(|(_, s)| s.as_ref().map(|s| &s["header"]["member_id"]) == Some(leader))
                    .map(|(host, _)| *host);
                if let Some(host) = host {
                    return host;
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd named no common leader within 30 s: {statuses:?} (logs in the cluster dir)"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for EtcdMembers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn etcd_version() -> String {
    let output = Command::new("etcd")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "etcd is not runnable ({e}): apt-get install -y etcd-server (make bench-raft does)"
            )
        });
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .next()
        .unwrap_or("etcd")
        .replace("etcd Version: ", "etcd ")
        .trim()
        .to_string()
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (the masters and etcd, started from
/// this process, inherit it).
fn raise_nofile_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a plain struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    assert!(
        limit.rlim_cur >= NOFILE_MIN,
        "RLIMIT_NOFILE is {}: 1000 connections need at least {NOFILE_MIN} (raise the hard limit)",
        limit.rlim_cur
    );
}
