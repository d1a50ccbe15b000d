//! `make bench-offers`: external frameworks on resource offers (format: ARCHITECTURE.md,
//! Benchmarks).
//!
//! One master (real Raft, fsync'd on this disk, real HTTP API) and `DCOS_BENCH_AGENTS`
//! emulated agents (default 1,000; the fake runtime, as in `bench-scheduling`) of 8 cpus and
//! 8 GiB each. `DCOS_BENCH_FRAMEWORKS` frameworks (default 10) speak Mesos's v1 scheduler
//! API over HTTP as pymesos does (SUBSCRIBE stream, ACCEPT, DECLINE, ACKNOWLEDGE of every
//! update): from every offer each launches as many tasks of 1 cpu and 1 GiB as it holds.
//!
//! - `launches_via_offers`: tasks RUNNING (as the frameworks hear it) per second, from the
//!   first SUBSCRIBE until every slot of the cluster (8 per agent) runs a task.
//! - `offer_cycle_p99`: then, for `DCOS_BENCH_SECONDS` (default 30), the bench ends
//!   `DCOS_BENCH_ENDS_PER_S` running tasks a second (default 20; picked at random, ended
//!   in the fake runtime as if they exited); for each, from the moment the master has
//!   applied its end (its resources are free in the state; a watcher on the applied index
//!   sees it) until a framework receives an offer of that agent, 99th percentile.
//!
//! No peer: Mesos needs its own build and ZooKeeper, which this machine does not have.

#[allow(dead_code)] // each benchmark uses part of it
mod common;

use bytes::Bytes;
use common::{env_number, loadavg, ms, rank};
use dcos_rs::agent::fake::FakeRuntime;
use dcos_rs::agent::AgentConfig;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const SLOTS_PER_AGENT: u64 = 8;
const GIVE_UP: Duration = Duration::from_secs(900);

type Http = Client<HttpConnector, Full<Bytes>>;
/// A task ended by the bench: its id in the state, its agent, when the master applied it.
type Freed = (String, String, Option<Instant>);

/// What the frameworks and the bench share.
#[derive(Default)]
struct Shared {
    /// Tasks running (framework id, task id, agent id), as the frameworks heard it.
    running: Vec<(String, String, String)>,
    running_total: u64,
    /// Every offer received: its agent and when.
    offers: Vec<(String, Instant)>,
    refused: u64,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let agents = env_number("DCOS_BENCH_AGENTS", 1_000) as usize;
    let frameworks = env_number("DCOS_BENCH_FRAMEWORKS", 10) as usize;
    let seconds = env_number("DCOS_BENCH_SECONDS", 30);
    let ends_per_s = env_number("DCOS_BENCH_ENDS_PER_S", 20).max(1);
    let master_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("master dir");
    let agents_dir = tempfile::tempdir_in("/dev/shm").expect("a tmpfs for the agents");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (master, to_master) = dcos_rs::master::start_local(
        master_dir.path().join("master"),
        listener,
        shutdown_rx.clone(),
    )
    .await
    .expect("the master starts");

    let started = Instant::now();
    let mut runtimes: HashMap<String, Arc<FakeRuntime>> = HashMap::new();
    for i in 0..agents {
        let mut config = AgentConfig::new(
            agents_dir.path().join(format!("a{i}")),
            format!("http://a{i}"),
        );
        config.hostname = format!("emulated-{i}");
        config.cpus = Some(SLOTS_PER_AGENT as f64);
        config.mem_mib = Some(SLOTS_PER_AGENT * 1024);
        config.disk_mib = Some(64 * 1024);
        // Ends are seen within a second; the latency measured starts when the master has
        // them, so this costs the emulation less and changes no figure.
        config.monitor_interval_ms = 1_000;
        let runtime = Arc::new(FakeRuntime::default());
        let agent =
            common::start_emulated_agent(config, runtime.clone(), &to_master, &shutdown_rx).await;
        runtimes.insert(agent.id.clone(), runtime);
    }
    let ids: Vec<String> = runtimes.keys().cloned().collect();
    wait("every agent registered", || {
        ids.iter().all(|id| master.is_connected(id))
    })
    .await;
    eprintln!(
        "{agents} agents registered in {:.1} s; {frameworks} frameworks subscribe",
        started.elapsed().as_secs_f64()
    );

    let http: Http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    let shared = Arc::new(Mutex::new(Shared::default()));
    let slots = agents as u64 * SLOTS_PER_AGENT;
    let first_subscribe = Instant::now();
    for f in 0..frameworks {
        tokio::spawn(framework(
            http.clone(),
            url.clone(),
            format!("bench-{f}"),
            Arc::clone(&shared),
        ));
    }
    let mut told = Instant::now();
    wait("every slot runs a task", || {
        let shared = shared.lock().unwrap();
        if told.elapsed() >= Duration::from_secs(10) {
            told = Instant::now();
            eprintln!(
                "{} of {slots} slots run a task; {} offers received, {} launches refused",
                shared.running.len(),
                shared.offers.len(),
                shared.refused
            );
        }
        shared.running.len() as u64 >= slots
    })
    .await;
    let filled = first_subscribe.elapsed();
    let launched = shared.lock().unwrap().running_total;
    eprintln!(
        "{slots} slots filled in {:.2} s ({launched} tasks running, {} launches refused); load {}",
        filled.as_secs_f64(),
        shared.lock().unwrap().refused,
        loadavg()
    );

    // Churn: tasks end at random; each end's apply is watched and matched to an offer.
    let freed: Arc<Mutex<Vec<Freed>>> = Arc::default();
    let watcher = {
        let freed = Arc::clone(&freed);
        let master = Arc::clone(&master);
        let mut applied = master.raft.subscribe();
        tokio::spawn(async move {
            while applied.changed().await.is_ok() {
                let now = Instant::now();
                let mut freed = freed.lock().unwrap();
                for (key, _, at) in freed.iter_mut().filter(|(_, _, at)| at.is_none()) {
                    let ended = master.read(|s| {
                        s.tasks
                            .get(key.as_str())
                            .is_none_or(|t| t.state.is_terminal())
                    });
                    if ended {
                        *at = Some(now);
                    }
                }
            }
        })
    };
    let churn_started = Instant::now();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let gap = Duration::from_micros(1_000_000 / ends_per_s);
    while churn_started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(gap).await;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let picked = {
            let mut shared = shared.lock().unwrap();
            if shared.running.is_empty() {
                continue;
            }
            let at = (seed % shared.running.len() as u64) as usize;
            shared.running.swap_remove(at)
        };
        let (framework_id, task_id, agent_id) = picked;
        let key = format!("{framework_id}.{task_id}");
        if runtimes[&agent_id].exit(&key, 0) {
            freed.lock().unwrap().push((key, agent_id, None));
        }
    }
    // The last ends reach the master within the agents' monitor interval.
    tokio::time::sleep(Duration::from_secs(3)).await;
    watcher.abort();
    let freed = freed.lock().unwrap().clone();
    let offers = shared.lock().unwrap().offers.clone();
    let mut by_agent: HashMap<&str, Vec<Instant>> = HashMap::new();
    for (agent, at) in &offers {
        by_agent.entry(agent.as_str()).or_default().push(*at);
    }
    let mut latencies = Vec::new();
    let mut unmatched = 0;
    for (_, agent, at) in &freed {
        let Some(at) = at else {
            unmatched += 1;
            continue;
        };
        let next = by_agent.get(agent.as_str()).and_then(|times| {
            times
                .iter()
                .filter(|t| **t + Duration::from_millis(1) >= *at)
                .min()
        });
        match next {
            Some(offered) => latencies.push(offered.saturating_duration_since(*at)),
            None => unmatched += 1,
        }
    }
    latencies.sort();
    assert!(
        !latencies.is_empty(),
        "no task end was followed by an offer ({} ends)",
        freed.len()
    );
    eprintln!(
        "{} task ends in {seconds} s: freed to offer received p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({unmatched} without an offer seen); load {}",
        freed.len(),
        ms(rank(&latencies, 50.0)),
        ms(rank(&latencies, 99.0)),
        ms(*latencies.last().expect("latencies")),
        loadavg()
    );
    println!("BENCH offer_cycle_p99 {:.1} ms", ms(rank(&latencies, 99.0)));
    println!(
        "BENCH launches_via_offers {:.0} per_s",
        slots as f64 / filled.as_secs_f64()
    );
    let _ = shutdown.send(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// One framework: subscribes, fills every offer with tasks, acknowledges every update.
async fn framework(http: Http, url: String, name: String, shared: Arc<Mutex<Shared>>) {
    let subscribe = json!({
        "type": "SUBSCRIBE",
        "subscribe": { "framework_info": {
            "user": "root", "name": name, "failover_timeout": 60,
            "capabilities": [{ "type": "PARTITION_AWARE" }],
        }},
    });
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{url}/api/v1/scheduler"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from(subscribe.to_string())))
        .expect("a request");
    let response = http.request(request).await.expect("SUBSCRIBE answered");
    assert_eq!(response.status(), 200, "SUBSCRIBE");
    let stream_id = response
        .headers()
        .get("mesos-stream-id")
        .and_then(|v| v.to_str().ok())
        .expect("Mesos-Stream-Id")
        .to_string();
    let mut body = response.into_body();
    let mut buffer: Vec<u8> = Vec::new();
    let mut framework_id = String::new();
    let mut next_task = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                eprintln!("{name}: the stream ended: {e}");
                return;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        let (records, rest) = dcos_api::mesos::records(&buffer).expect("RecordIO");
        let events: Vec<Value> = records
            .iter()
            .map(|r| serde_json::from_slice(r).expect("an event"))
            .collect();
        let rest = rest.to_vec();
        buffer = rest;
        for event in events {
            match event["type"].as_str() {
                Some("SUBSCRIBED") => {
                    framework_id = event["subscribed"]["framework_id"]["value"]
                        .as_str()
                        .expect("framework id")
                        .to_string();
                }
                Some("OFFERS") => {
                    let now = Instant::now();
                    for offer in event["offers"]["offers"].as_array().into_iter().flatten() {
                        let agent_id = offer["agent_id"]["value"].as_str().unwrap_or_default();
                        shared
                            .lock()
                            .unwrap()
                            .offers
                            .push((agent_id.to_string(), now));
                        let scalar = |name: &str| {
                            offer["resources"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter(|r| r["name"] == name)
                                .filter_map(|r| r["scalar"]["value"].as_f64())
                                .sum::<f64>()
                        };
                        let n = (scalar("cpus") + 1e-9).min(scalar("mem") / 1024.0 + 1e-9) as u64;
                        let tasks: Vec<Value> = (0..n)
                            .map(|_| {
                                next_task += 1;
                                json!({
                                    "name": format!("t{next_task}"),
                                    "task_id": { "value": format!("t{next_task}") },
                                    "agent_id": offer["agent_id"],
                                    "resources": [
                                        { "name": "cpus", "type": "SCALAR", "scalar": { "value": 1.0 } },
                                        { "name": "mem", "type": "SCALAR", "scalar": { "value": 1024.0 } },
                                    ],
                                    "command": { "value": "sleep 3600" },
                                })
                            })
                            .collect();
                        let call = if tasks.is_empty() {
                            json!({
                                "framework_id": { "value": framework_id },
                                "type": "DECLINE",
                                "decline": { "offer_ids": [offer["id"]], "filters": { "refuse_seconds": 1.0 } },
                            })
                        } else {
                            json!({
                                "framework_id": { "value": framework_id },
                                "type": "ACCEPT",
                                "accept": {
                                    "offer_ids": [offer["id"]],
                                    "operations": [{ "type": "LAUNCH", "launch": { "task_infos": tasks } }],
                                    "filters": { "refuse_seconds": 0.0 },
                                },
                            })
                        };
                        tokio::spawn(send(http.clone(), url.clone(), stream_id.clone(), call));
                    }
                }
                Some("UPDATE") => {
                    let status = &event["update"]["status"];
                    let task_id = status["task_id"]["value"].as_str().unwrap_or_default();
                    let agent_id = status["agent_id"]["value"].as_str().unwrap_or_default();
                    match status["state"].as_str() {
                        Some("TASK_RUNNING") => {
                            let mut shared = shared.lock().unwrap();
                            shared.running.push((
                                framework_id.clone(),
                                task_id.to_string(),
                                agent_id.to_string(),
                            ));
                            shared.running_total += 1;
                        }
                        Some("TASK_ERROR" | "TASK_DROPPED" | "TASK_LOST") => {
                            shared.lock().unwrap().refused += 1;
                        }
                        _ => {}
                    }
                    if let Some(uuid) = status["uuid"].as_str() {
                        let ack = json!({
                            "framework_id": { "value": framework_id },
                            "type": "ACKNOWLEDGE",
                            "acknowledge": {
                                "agent_id": status["agent_id"],
                                "task_id": status["task_id"],
                                "uuid": uuid,
                            },
                        });
                        tokio::spawn(send(http.clone(), url.clone(), stream_id.clone(), ack));
                    }
                }
                _ => {}
            }
        }
    }
    eprintln!("{name}: the stream ended");
}

async fn send(http: Http, url: String, stream_id: String, call: Value) {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{url}/api/v1/scheduler"))
        .header("content-type", "application/json")
        .header("mesos-stream-id", stream_id)
        .body(Full::new(Bytes::from(call.to_string())))
        .expect("a request");
    match http.request(request).await {
        Ok(response) if response.status() == 202 => {}
        Ok(response) => {
            let status = response.status();
            let body = response.into_body().collect().await.map(|b| b.to_bytes());
            eprintln!("{} answered {status}: {body:?}", call["type"]);
        }
        Err(e) => eprintln!("{}: {e}", call["type"]),
    }
}

async fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let since = Instant::now();
    while !done() {
        assert!(since.elapsed() < GIVE_UP, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
