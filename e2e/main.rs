//! End-to-end tests: real `dcos-rs` processes on several "hosts" (network namespaces on one
//! bridge), killed, paused, restarted and partitioned. Run by `make test` as root; the hosts
//! and addresses are in e2e/net.rs, the processes and their configs in e2e/cluster.rs.
//!
//! Each test builds its own hosts; a lock makes them run one at a time.

mod cluster;
mod frameworks;
mod installer;
mod jobs;
mod net;
mod testbed;

use cluster::{master_url, wait_for, Cluster, UNREACHABLE_TIMEOUT_MS};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const MASTERS: [u32; 3] = [1, 2, 3];

/// Masters on hosts 1-3, agents on hosts 4 and 5, all registered.
async fn three_masters_two_agents() -> Cluster {
    let mut cluster = Cluster::new(5);
    for host in MASTERS {
        cluster.start_master(host, &MASTERS).await;
    }
    for host in [4, 5] {
        cluster.start_agent(host, &MASTERS).await;
    }
    let leader = cluster.leader(&MASTERS, Duration::from_secs(20)).await;
    wait_for("both agents active", Duration::from_secs(20), async || {
        let agents = cluster.agents(leader).await;
        (agents.iter().filter(|a| a["state"] == "active").count() == 2).then_some(())
    })
    .await;
    // Settled: no agent registered again for a while. Right after the election a leader's
    // lease can lapse once (five processes starting on two cores), which drops the agents'
    // links; tasks placed during that moment would be lost and replaced on the other agent,
    // and the tests that expect tasks on both agents would see none on one.
    let registrations = async |cluster: &Cluster| -> Vec<Value> {
        let leader = cluster.leader(&MASTERS, Duration::from_secs(20)).await;
        let mut agents = cluster.agents(leader).await;
        agents.sort_by_key(|a| a["id"].to_string());
        agents
            .iter()
            .map(|a| json!([a["id"], a["registeredAt"], a["state"]]))
            .collect()
    };
    wait_for(
        "the agents settled with the leader",
        Duration::from_secs(20),
        async || {
            let before = registrations(&cluster).await;
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let settled =
                before == registrations(&cluster).await && before.iter().all(|a| a[2] == "active");
            settled.then_some(())
        },
    )
    .await;
    cluster
}

fn sleeper(id: &str, instances: u32) -> Value {
    json!({ "id": id, "cmd": "sleep 100000", "cpus": 0.2, "mem": 32, "instances": instances })
}

/// Deploys `app` through master 1 (redirected to the leader) and waits until `instances`
/// tasks run; returns them as the leader reports them.
async fn deploy(cluster: &Cluster, app: Value) -> Vec<Value> {
    let id = app["id"].as_str().unwrap().to_string();
    let instances = app["instances"].as_u64().unwrap() as usize;
    let created = cluster.write(1, Method::POST, "/v2/apps", &app).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    wait_for(
        &format!("{instances} tasks of {id} running"),
        Duration::from_secs(30),
        async || {
            let running = running_of(&cluster.tasks(1).await, &id);
            (running.len() == instances).then_some(running)
        },
    )
    .await
}

fn running_of(tasks: &[Value], app_id: &str) -> Vec<Value> {
    tasks
        .iter()
        .filter(|t| t["appId"] == app_id && t["state"] == "TASK_RUNNING")
        .cloned()
        .collect()
}

fn ids(tasks: &[Value]) -> BTreeSet<String> {
    tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

/// A write the cluster acknowledged: when it was sent and when the answer came.
struct Ack {
    app_id: String,
    sent: Instant,
    acked: Instant,
}

/// Creates small apps (no instances) one after another, as fast as the cluster takes them,
/// until `stop`: each goes to one master, follows a redirect, and on any failure the next
/// attempt goes to the next master. Returns the acknowledged ones.
async fn write_stream(cluster: &Cluster, masters: &[u32], stop: &AtomicBool) -> Vec<Ack> {
    let mut acks = Vec::new();
    let (mut n, mut target) = (0, 0);
    while !stop.load(Ordering::SeqCst) {
        let app_id = format!("/w{n}");
        let body = json!({ "id": app_id, "cmd": "true", "cpus": 0.01, "mem": 4, "instances": 0 });
        let sent = Instant::now();
        let limit = Duration::from_secs(1);
        let base = master_url(masters[target % masters.len()]);
        let mut answer = cluster
            .try_call(&base, Method::POST, "/v2/apps", Some(&body), limit)
            .await;
        if let Ok(redirect) = &answer {
            if redirect.status == StatusCode::TEMPORARY_REDIRECT {
                let location = redirect.headers["location"].to_str().unwrap().to_string();
                answer = cluster
                    .try_call(&location, Method::POST, "", Some(&body), limit)
                    .await;
            }
        }
        if let Ok(refused) = &answer {
            assert!(
                !refused.status.is_client_error() || refused.status == StatusCode::CONFLICT,
                "a write was refused: {} {}",
                refused.status,
                refused.body
            );
        }
        match answer.map(|a| a.status) {
            Ok(StatusCode::CREATED) => {
                acks.push(Ack {
                    app_id,
                    sent,
                    acked: Instant::now(),
                });
                n += 1;
            }
            // An earlier attempt that timed out was committed after all: it is there.
            Ok(StatusCode::CONFLICT) => n += 1,
            _ => {
                target += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    acks
}

async fn app_ids(cluster: &Cluster, host: u32) -> BTreeSet<String> {
    let answer = cluster.call(host, Method::GET, "/v2/apps", None).await;
    answer.body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until every master of `hosts` shows the same apps; returns them.
async fn same_apps_everywhere(cluster: &Cluster, hosts: &[u32]) -> BTreeSet<String> {
    wait_for(
        &format!("masters {hosts:?} showing the same apps"),
        Duration::from_secs(30),
        async || {
            let mut seen = Vec::new();
            for host in hosts {
                seen.push(app_ids(cluster, *host).await);
            }
            seen.windows(2)
                .all(|w| w[0] == w[1])
                .then(|| seen.pop().unwrap())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_writes_elects_a_new_one_within_2s_and_loses_nothing() {
    let mut cluster = three_masters_two_agents().await;
    let web = deploy(&cluster, sleeper("/web", 2)).await;
    let mut pids_before: BTreeMap<String, i64> = cluster.agent_tasks(4).await;
    pids_before.extend(cluster.agent_tasks(5).await);
    assert_eq!(
        pids_before.keys().cloned().collect::<BTreeSet<_>>(),
        ids(&web)
    );

    let old = cluster.leader(&MASTERS, Duration::from_secs(10)).await;
    let rest: Vec<u32> = MASTERS.into_iter().filter(|h| *h != old).collect();
    let stop = AtomicBool::new(false);
    let mut killed_at = None;
    let mut elected_after = None;
    let (acks, ()) = tokio::join!(write_stream(&cluster, &MASTERS, &stop), async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(cluster.pid(old)),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let t0 = Instant::now();
        killed_at = Some(t0);
        let new = cluster.leader(&rest, Duration::from_secs(2)).await;
        elected_after = Some((new, t0.elapsed()));
        tokio::time::sleep(Duration::from_millis(2000)).await;
        stop.store(true, Ordering::SeqCst);
    });
    cluster.kill(old); // reap
    let killed_at = killed_at.unwrap();
    let (new, elected_after) = elected_after.unwrap();
    let before = acks.iter().filter(|a| a.acked < killed_at).count();
    let first_after = acks
        .iter()
        .find(|a| a.sent >= killed_at)
        .expect("writes succeed after the leader was killed");
    let gap = first_after.acked - killed_at;
    eprintln!(
        "leader {old} killed: master {new} named leader after {elected_after:?}, first write \
         acknowledged {gap:?} after the kill; {before} writes before, {} after",
        acks.len() - before
    );
    assert!(
        gap <= Duration::from_secs(2),
        "first write after the kill took {gap:?}"
    );

    // Every acknowledged write is there, on both surviving masters.
    let apps = same_apps_everywhere(&cluster, &rest).await;
    let missing: Vec<&str> = acks
        .iter()
        .map(|a| a.app_id.as_str())
        .filter(|id| !apps.contains(*id))
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");

    // The app was not touched: the same tasks run with the same pids.
    let tasks = cluster.tasks(new).await;
    assert_eq!(ids(&running_of(&tasks, "/web")), ids(&web));
    for host in [4, 5] {
        for (task, pid) in cluster.agent_tasks(host).await {
            assert_eq!(
                pids_before.get(&task),
                Some(&pid),
                "task {task} on host {host}"
            );
        }
    }

    // The old leader comes back as a follower and catches up.
    cluster.start(old).await;
    let apps_all = same_apps_everywhere(&cluster, &MASTERS).await;
    assert_eq!(apps_all, apps);
    assert_eq!(cluster.leader(&MASTERS, Duration::from_secs(10)).await, new);

    // A paused leader (SIGSTOP) is replaced too; resumed, it follows the newer one.
    cluster.pause(new);
    let others: Vec<u32> = MASTERS.into_iter().filter(|h| *h != new).collect();
    let third = cluster.leader(&others, Duration::from_secs(5)).await;
    cluster.resume(new);
    assert_eq!(
        cluster.leader(&MASTERS, Duration::from_secs(10)).await,
        third
    );
    // The CLI, configured only by `cluster setup`'s cli.toml, sees the same through any master.
    let listed: Value = serde_json::from_str(&cluster.cli(&["--json", "app", "list"])).unwrap();
    let listed = listed
        .as_array()
        .or(listed["apps"].as_array())
        .unwrap()
        .len();
    assert_eq!(listed, apps.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_refuses_writes_while_the_majority_goes_on_and_heals_to_one_history() {
    let cluster = three_masters_two_agents().await;
    deploy(&cluster, sleeper("/web", 2)).await;
    let old = cluster.leader(&MASTERS, Duration::from_secs(10)).await;
    let rest: Vec<u32> = MASTERS.into_iter().filter(|h| *h != old).collect();

    cluster.net().partition(&[old], &rest);
    let cut = Instant::now();
    let new = cluster.leader(&rest, Duration::from_secs(10)).await;
    eprintln!(
        "partitioned leader {old}: master {new} leads after {:?}",
        cut.elapsed()
    );
    let accepted = cluster
        .write(new, Method::POST, "/v2/apps", &sleeper("/majority", 0))
        .await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{}", accepted.body);

    // The old leader, past its lease, neither claims to lead nor accepts a write.
    wait_for(
        "the old leader to give up",
        Duration::from_secs(5),
        async || {
            let claimed = cluster.call(old, Method::GET, "/v2/leader", None).await;
            (claimed.status != StatusCode::OK).then_some(())
        },
    )
    .await;
    eprintln!("the old leader gave up after {:?}", cut.elapsed());
    let refused = cluster
        .call(
            old,
            Method::POST,
            "/v2/apps",
            Some(&sleeper("/minority", 0)),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.body
    );
    assert_eq!(refused.body["code"], "no_leader", "{}", refused.body);
    // The agents left it for the majority's leader.
    wait_for(
        "both agents active on the new leader",
        Duration::from_secs(20),
        async || {
            let agents = cluster.agents(new).await;
            (agents.iter().filter(|a| a["state"] == "active").count() == 2).then_some(())
        },
    )
    .await;

    cluster.net().heal();
    let apps = same_apps_everywhere(&cluster, &MASTERS).await;
    assert!(
        apps.contains("/majority") && apps.contains("/web"),
        "{apps:?}"
    );
    assert!(!apps.contains("/minority"), "{apps:?}");
    assert_eq!(cluster.leader(&MASTERS, Duration::from_secs(10)).await, new);
    let running = running_of(&cluster.tasks(old).await, "/web");
    assert_eq!(running.len(), 2, "{running:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_agents_tasks_are_replaced_and_the_stale_copies_killed_after_the_heal() {
    let cluster = three_masters_two_agents().await;
    let (a4, a5) = (cluster.agent_id(4), cluster.agent_id(5));
    let web = deploy(&cluster, sleeper("/web", 2)).await;
    let stale: String = web
        .iter()
        .find(|t| t["slaveId"] == a4.as_str())
        .expect("one task on each agent")["id"]
        .as_str()
        .unwrap()
        .to_string();

    cluster.net().isolate(4);
    let cut = Instant::now();
    wait_for(
        "the cut-off agent's task unreachable",
        Duration::from_secs(30),
        async || {
            let tasks = cluster.tasks(1).await;
            tasks
                .iter()
                .any(|t| t["id"] == stale.as_str() && t["state"] == "TASK_UNREACHABLE")
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "agent 4 marked unreachable {:?} after the cut (timeout {UNREACHABLE_TIMEOUT_MS} ms)",
        cut.elapsed()
    );
    wait_for(
        "a replacement running on agent 5",
        Duration::from_secs(30),
        async || {
            let running = running_of(&cluster.tasks(1).await, "/web");
            (running.len() == 2 && running.iter().all(|t| t["slaveId"] == a5.as_str()))
                .then_some(())
        },
    )
    .await;
    // Without a master the agent keeps running what it has.
    assert!(cluster.agent_tasks(4).await.contains_key(&stale));

    cluster.net().heal();
    let healed = Instant::now();
    // From both agents' own task lists: the stale copy goes away once the agent is back, and
    // from then on the app never runs more than its 2 instances.
    let mut stale_gone_after = None;
    while stale_gone_after
        .is_none_or(|gone: Duration| healed.elapsed() < gone + Duration::from_secs(3))
    {
        assert!(
            healed.elapsed() < Duration::from_secs(30),
            "the stale copy still runs 30 s after the heal"
        );
        let on4 = cluster.agent_tasks(4).await;
        let on5 = cluster.agent_tasks(5).await;
        let web_tasks = on4
            .keys()
            .chain(on5.keys())
            .filter(|t| t.starts_with("web."))
            .count();
        match stale_gone_after {
            None if !on4.contains_key(&stale) => stale_gone_after = Some(healed.elapsed()),
            None => assert!(web_tasks <= 3, "{on4:?} {on5:?}"),
            Some(_) => {
                assert!(!on4.contains_key(&stale), "the stale copy came back");
                assert!(
                    web_tasks <= 2,
                    "more copies than instances: {on4:?} {on5:?}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "stale copy gone {:?} after the heal",
        stale_gone_after.unwrap()
    );
    let tasks = cluster.tasks(1).await;
    let old = tasks.iter().find(|t| t["id"] == stale.as_str());
    assert!(old.is_none_or(|t| t["state"] == "TASK_KILLED"), "{old:?}");
    let running = running_of(&tasks, "/web");
    assert_eq!(running.len(), 2, "{running:#?}");
    let agents = cluster.agents(1).await;
    assert!(agents.iter().all(|a| a["state"] == "active"), "{agents:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_keeps_its_tasks_with_the_same_pids_and_registers_again() {
    let mut cluster = three_masters_two_agents().await;
    let a4 = cluster.agent_id(4);
    let web = deploy(&cluster, sleeper("/web", 4)).await;
    let before = cluster.agent_tasks(4).await;
    let registered = |agents: &[Value]| {
        agents
            .iter()
            .find(|a| a["id"] == a4.as_str())
            .map(|a| (a["registeredAt"].clone(), a["state"].clone()))
            .unwrap()
    };
    let (registered_before, _) = registered(&cluster.agents(1).await);
    assert!(!before.is_empty(), "{web:#?}");

    // A crash (kill -9), then a start: every task adopted with its pid.
    cluster.kill(4);
    cluster.start(4).await;
    wait_for(
        "agent 4 registered again",
        Duration::from_secs(20),
        async || {
            let (at, state) = registered(&cluster.agents(1).await);
            (at != registered_before && state == "active").then_some(())
        },
    )
    .await;
    assert_eq!(cluster.agent_tasks(4).await, before);

    // A clean stop (SIGTERM) and start: the same.
    cluster.stop(4);
    cluster.start(4).await;
    wait_for(
        "agent 4 active after the restart",
        Duration::from_secs(20),
        async || {
            let (_, state) = registered(&cluster.agents(1).await);
            (state == "active").then_some(())
        },
    )
    .await;
    assert_eq!(cluster.agent_tasks(4).await, before);
    let running = running_of(&cluster.tasks(1).await, "/web");
    assert_eq!(ids(&running), ids(&web));

    // It takes new work: scaling up launches more tasks.
    let scaled = cluster
        .write(1, Method::PUT, "/v2/apps/web", &json!({ "instances": 6 }))
        .await;
    assert_eq!(scaled.status, StatusCode::OK, "{}", scaled.body);
    wait_for("6 tasks running", Duration::from_secs(30), async || {
        (running_of(&cluster.tasks(1).await, "/web").len() == 6).then_some(())
    })
    .await;
}

/// marathon-python (PyPI `marathon`), pointed at a follower first: reads are served there,
/// writes passed on to the leader with the user's token (tests/clients/marathon_python_ha.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_python_pointed_at_a_follower_deploys_scales_and_removes() {
    let cluster = three_masters_two_agents().await;
    let leader = cluster.leader(&MASTERS, Duration::from_secs(20)).await;
    let follower = MASTERS.into_iter().find(|m| *m != leader).unwrap();
    let urls = format!("{},{}", master_url(follower), master_url(leader));
    let ca = cluster.admin_tls().ca.display().to_string();
    let (success, stdout, stderr) =
        client_script("marathon_python_ha.py", &[&urls, cluster.token(), &ca]).await;
    assert!(
        !stderr.contains("No module named 'marathon'"),
        "marathon is missing: pip install marathon==0.13.0 (.ci/run does)"
    );
    assert!(success, "{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// Runs `tests/clients/<script>` with `args`: whether it succeeded, its stdout and stderr.
async fn client_script(script: &str, args: &[&str]) -> (bool, String, String) {
    let mut command = std::process::Command::new("python3");
    command
        .arg(format!(
            "{}/tests/clients/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output().expect("python3 runs"))
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The dashboard on a follower (tests/clients/dashboard_follower.py, chromium): a deploy
/// from its editor reaches the leader, and a task's log and usage come through the
/// follower from the task's agent over mutual TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_on_a_follower_deploys_and_follows_a_task_log_over_mutual_tls() {
    let cluster = three_masters_two_agents().await;
    let leader = cluster.leader(&MASTERS, Duration::from_secs(20)).await;
    let follower = MASTERS.into_iter().find(|m| *m != leader).unwrap();
    let (success, stdout, stderr) = client_script(
        "dashboard_follower.py",
        &[&master_url(follower), cluster.token()],
    )
    .await;
    assert!(
        success && stdout.contains("all checks passed"),
        "{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_4_and_5_join_at_runtime_and_one_is_removed_with_one_leader_and_the_same_state() {
    let mut cluster = Cluster::new(5);
    for host in MASTERS {
        cluster.start_master(host, &MASTERS).await;
    }
    let leader = cluster.leader(&MASTERS, Duration::from_secs(20)).await;
    for i in 0..20 {
        let created = cluster
            .write(
                1,
                Method::POST,
                "/v2/apps",
                &sleeper(&format!("/before{i}"), 0),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    }

    // Through the CLI, as an operator would.
    for host in [4, 5] {
        cluster.start_master(host, &[]).await;
        let id = host.to_string();
        let url = master_url(host);
        cluster.cli(&[
            "node",
            "add",
            "--role",
            "master",
            "--id",
            &id,
            "--advertise-url",
            &url,
        ]);
    }
    let all = [1, 2, 3, 4, 5];
    assert_eq!(cluster.leader(&all, Duration::from_secs(10)).await, leader);
    let members = cluster
        .call(leader, Method::GET, "/cluster/v1/masters", None)
        .await;
    let roles: Vec<&str> = members.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "follower").count(),
        4,
        "{}",
        members.body
    );
    let apps = same_apps_everywhere(&cluster, &all).await;
    assert_eq!(apps.len(), 20);

    // Remove a follower among the first three; it is stopped afterwards.
    let gone = MASTERS.into_iter().find(|h| *h != leader).unwrap();
    cluster.cli(&["node", "remove", "--master", &gone.to_string()]);
    cluster.stop(gone);
    let rest: Vec<u32> = all.into_iter().filter(|h| *h != gone).collect();
    assert_eq!(cluster.leader(&rest, Duration::from_secs(10)).await, leader);
    let created = cluster
        .write(rest[0], Method::POST, "/v2/apps", &sleeper("/after", 0))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let apps_after = same_apps_everywhere(&cluster, &rest).await;
    assert_eq!(apps_after.len(), 21);
    let members = cluster
        .call(rest[0], Method::GET, "/cluster/v1/masters", None)
        .await;
    let ids: Vec<u64> = members.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["node_id"].as_u64().unwrap())
        .collect();
    assert!(
        !ids.contains(&(gone as u64)) && ids.len() == 4,
        "{}",
        members.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_agents_tasks_move_to_the_other_agent_and_a_removed_agent_cannot_return() {
    let mut cluster = three_masters_two_agents().await;
    let (a4, a5) = (cluster.agent_id(4), cluster.agent_id(5));
    deploy(&cluster, sleeper("/web", 4)).await;
    assert!(!cluster.agent_tasks(4).await.is_empty());

    // `node drain` by address, waiting: every task moves to agent 5, start-then-stop.
    let address = net::address(4);
    cluster.cli(&["node", "drain", &address, "--wait", "--timeout", "60"]);
    let running = running_of(&cluster.tasks(1).await, "/web");
    assert_eq!(running.len(), 4, "{running:#?}");
    assert!(running.iter().all(|t| t["slaveId"] == a5.as_str()));
    assert!(cluster.agent_tasks(4).await.is_empty());

    // Still draining after a restart: it takes no new work.
    cluster.stop(4);
    cluster.start(4).await;
    let state = |agents: Vec<Value>| {
        agents
            .into_iter()
            .find(|a| a["id"] == a4.as_str())
            .map(|a| a["state"].as_str().unwrap().to_string())
    };
    wait_for(
        "agent 4 back, draining",
        Duration::from_secs(20),
        async || (state(cluster.agents(1).await).as_deref() == Some("draining")).then_some(()),
    )
    .await;
    let scaled = cluster
        .write(1, Method::PUT, "/v2/apps/web", &json!({ "instances": 5 }))
        .await;
    assert_eq!(scaled.status, StatusCode::OK, "{}", scaled.body);
    wait_for(
        "5 tasks, all on agent 5",
        Duration::from_secs(30),
        async || {
            let running = running_of(&cluster.tasks(1).await, "/web");
            (running.len() == 5 && running.iter().all(|t| t["slaveId"] == a5.as_str()))
                .then_some(())
        },
    )
    .await;

    // Removed, it is forgotten; its stream is closed and it is refused when it connects
    // again, also after a restart, and says why.
    cluster.cli(&["node", "remove", &a4]);
    // Master 1 may be a follower that applies the removal a moment after the leader answered.
    wait_for(
        "the removal seen on master 1",
        Duration::from_secs(10),
        async || state(cluster.agents(1).await).is_none().then_some(()),
    )
    .await;
    wait_for(
        "the agent told why it is refused",
        Duration::from_secs(20),
        async || {
            cluster
                .log(4)
                .contains("was removed from the cluster")
                .then_some(())
        },
    )
    .await;
    cluster.stop(4);
    cluster.start(4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(state(cluster.agents(1).await), None);
}
