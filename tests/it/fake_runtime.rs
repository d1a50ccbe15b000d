//! The services framework end to end without root: one master (real Raft on disk, real HTTP
//! API) and three in-process agents whose tasks run in the fake runtime
//! (`dcos_rs::agent::fake`). Everything above the runtime seam is the real code.

use dcos_api::{AppView, TasksEnvelope};
use dcos_core::{Command, Outcome, Resources, Task, TaskOwner, TaskState};
use dcos_rs::agent::fake::FakeRuntime;
use dcos_rs::agent::{Agent, AgentConfig};
use dcos_rs::cli::client::Client;
use dcos_rs::link::LINK_QUEUE_MAX;
use dcos_rs::master::Master;
use hyper::Method;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

use crate::common::wait_for;

struct FakeCluster {
    master: Arc<Master>,
    client: Client,
    agents: Vec<(Arc<Agent>, Arc<FakeRuntime>)>,
    /// The master's inbox, as the agents have it.
    to_master: mpsc::Sender<dcos_rs::link::ToMaster>,
    shutdown: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl FakeCluster {
    /// A master and `agents` agents of 1 cpu and 512 MiB each, ports 31000-31009.
    async fn start(agents: usize) -> FakeCluster {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, shutdown_rx) = watch::channel(false);
        // The same starts as `dcos-rs up`, with the fake runtime under the agents.
        let (master, to_master) =
            dcos_rs::master::start_local(dir.path().join("master"), listener, shutdown_rx.clone())
                .await
                .unwrap();

        let mut started = Vec::new();
        for i in 0..agents {
            let mut config = AgentConfig::new(
                dir.path().join(format!("agent-{i}")),
                format!("http://a{i}"),
            );
            config.hostname = format!("fake-{i}");
            config.cpus = Some(1.0);
            config.mem_mib = Some(512);
            config.disk_mib = Some(1024);
            config.ports = vec![dcos_core::PortRange {
                begin: 31000,
                end: 31009,
            }];
            let runtime = Arc::new(FakeRuntime::default());
            let agent_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let agent = dcos_rs::agent::start(
                config,
                to_master.clone(),
                runtime.clone(),
                dcos_rs::agent::AgentApi {
                    listener: agent_listener,
                    tls: None,
                    auth: None,
                    guard: dcos_rs::http_guard::RequestGuard::new(),
                },
                shutdown_rx.clone(),
            )
            .await
            .expect("an agent starts without root")
            .agent;
            started.push((agent, runtime));
        }
        for (agent, _) in &started {
            let id = agent.id.clone();
            let master = master.clone();
            wait_for("agent registration", Duration::from_secs(10), || {
                let connected = master.is_connected(&id);
                async move { connected.then_some(()) }
            })
            .await;
        }
        FakeCluster {
            master,
            client: Client::new(&url),
            agents: started,
            to_master,
            shutdown,
            _dir: dir,
        }
    }

    async fn tasks(&self) -> Vec<dcos_api::TaskView> {
        let tasks: TasksEnvelope = self.client.get("/cluster/v1/tasks").await.unwrap();
        tasks.tasks
    }

    /// Waits until `/web` has exactly `n` live tasks, all running.
    async fn wait_running(&self, n: usize) -> Vec<dcos_api::TaskView> {
        wait_for(
            &format!("{n} running tasks"),
            Duration::from_secs(20),
            || async {
                let tasks = self.tasks().await;
                let live: Vec<_> = tasks
                    .into_iter()
                    .filter(|t| t.app_id == "/web" && !t.state.is_terminal())
                    .collect();
                (live.len() == n && live.iter().all(|t| t.state == TaskState::Running))
                    .then_some(live)
            },
        )
        .await
    }

    fn runtime_of(&self, agent_id: &str) -> &FakeRuntime {
        &self
            .agents
            .iter()
            .find(|(a, _)| a.id == agent_id)
            .expect("known agent")
            .1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_run_end_to_end_on_fake_agents_without_root() {
    let cluster = FakeCluster::start(3).await;
    let app = serde_json::json!({
        "id": "/web", "cmd": "serve", "cpus": 0.5, "mem": 128, "instances": 4,
        "env": {"GREETING": "hi"},
        "portDefinitions": [{"port": 0}]
    });
    let created: AppView = cluster
        .client
        .send_json(Method::POST, "/v2/apps", &serde_json::to_vec(&app).unwrap())
        .await
        .unwrap();
    assert_eq!(created.spec.instances, 4);

    // Placement spreads by free memory: 2 + 1 + 1 over the three agents.
    let running = cluster.wait_running(4).await;
    let mut per_agent: Vec<usize> = cluster
        .agents
        .iter()
        .map(|(a, _)| running.iter().filter(|t| t.slave_id == a.id).count())
        .collect();
    per_agent.sort();
    assert_eq!(per_agent, vec![1, 1, 2], "{running:#?}");

    // The framework built each task whole: Marathon's variables are in the launch, the
    // host port placement chose among them.
    let launched: Task = cluster.master.read(|s| s.tasks[&running[0].id].clone());
    let env = &launched.launch.env;
    assert_eq!(env["MARATHON_APP_ID"], "/web");
    assert_eq!(env["GREETING"], "hi");
    assert_eq!(env["PORT0"], launched.ports[0].to_string());
    assert_eq!(running[0].ports, launched.ports);

    // A task of another owner on the same agents is left alone by the services framework.
    let roomy = running
        .iter()
        .find(|t| running.iter().filter(|o| o.slave_id == t.slave_id).count() == 1)
        .expect("an agent with one instance");
    let job_task = Task {
        id: "job-backup.r1".into(),
        owner: TaskOwner::JobRun {
            job_id: "backup".into(),
            run_id: "r1".into(),
        },
        agent_id: roomy.slave_id.clone(),
        resources: Resources {
            cpus_milli: 100,
            mem_mib: 16,
            disk_mib: 0,
        },
        ports: vec![],
        ..launched.clone()
    };
    let backup = serde_json::from_value(serde_json::json!({
        "id": "backup", "run": {"cmd": "true", "cpus": 0.1, "mem": 16}
    }))
    .unwrap();
    for command in [
        Command::PutJob {
            job: backup,
            create: true,
            at_ms: 1,
            if_version_ms: None,
        },
        Command::StartRun {
            job_id: "backup".into(),
            run_id: "r1".into(),
            workflow_id: "r1".into(),
            trigger: dcos_core::jobs::state::Trigger::Manual,
            arguments: vec![],
            at_ms: 1,
        },
        Command::LaunchTask { task: job_task },
    ] {
        assert_eq!(
            cluster.master.write(command).await.unwrap(),
            Outcome::Applied
        );
    }
    // A crashed instance is replaced (after the first backoff, 1 s).
    let victim = &running[1];
    assert!(cluster.runtime_of(&victim.slave_id).exit(&victim.id, 3));
    wait_for("the failure recorded", Duration::from_secs(10), || async {
        let tasks = cluster.tasks().await;
        tasks
            .iter()
            .any(|t| t.id == victim.id && t.state == TaskState::Failed)
            .then_some(())
    })
    .await;
    let after = cluster.wait_running(4).await;
    assert!(after.iter().all(|t| t.id != victim.id));
    let job = cluster.master.read(|s| s.tasks["job-backup.r1"].clone());
    assert!(
        !job.kill_requested,
        "the services framework must not kill a job's task"
    );
    // Marathon's task list shows only the services framework's live tasks, in Marathon's
    // shape (the failed one stays in /cluster/v1/tasks for a while, which lists every
    // framework's tasks: the job's too).
    let marathon: dcos_api::MarathonTasksEnvelope = cluster.client.get("/v2/tasks").await.unwrap();
    let live = cluster.tasks().await;
    assert_eq!(
        marathon.tasks.len(),
        live.iter()
            .filter(|t| !t.state.is_terminal() && t.owner.kind == "service")
            .count()
    );
    let job_task = live
        .iter()
        .find(|t| t.id == "job-backup.r1")
        .expect("listed");
    assert_eq!(
        (job_task.owner.kind.as_str(), job_task.app_id.as_str()),
        ("job", "")
    );
    assert!(marathon.tasks.iter().all(|t| t.app_id == "/web"));

    // Scale down, then remove: the fake agents stop what the framework kills.
    cluster
        .client
        .send_json::<serde_json::Value>(Method::PUT, "/v2/apps/web", br#"{"instances": 1}"#)
        .await
        .unwrap();
    cluster.wait_running(1).await;
    cluster
        .client
        .send_json::<serde_json::Value>(Method::DELETE, "/v2/apps/web", b"")
        .await
        .unwrap();
    wait_for("every instance killed", Duration::from_secs(10), || async {
        let running: usize = cluster.agents.iter().map(|(_, r)| r.running().len()).sum();
        // Only the job's task is left (it was recorded, never sent to an agent).
        (running == 0).then_some(())
    })
    .await;
    let job = cluster.master.read(|s| s.tasks["job-backup.r1"].clone());
    assert!(!job.kill_requested && !job.state.is_terminal());
    let _ = cluster.shutdown.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_fits_no_agent_is_refused_with_the_largest_offer() {
    let cluster = FakeCluster::start(2).await;
    let app = serde_json::json!({"id": "/big", "cmd": "x", "cpus": 4, "mem": 64});
    let error = cluster
        .client
        .send_json::<AppView>(Method::POST, "/v2/apps", &serde_json::to_vec(&app).unwrap())
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(422));
    assert!(
        error
            .to_string()
            .contains("cpus: 4 cpus is more than any agent offers (largest: 1 cpus)"),
        "{error}"
    );
    let image_app = serde_json::json!({"id": "/img", "cpus": 0.1, "mem": 16,
        "container": {"docker": {"image": "busybox"}}});
    let error = cluster
        .client
        .send_json::<AppView>(
            Method::POST,
            "/v2/apps",
            &serde_json::to_vec(&image_app).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("image busybox is not on any agent"),
        "{error}"
    );
    let bad_reference = serde_json::json!({"id": "/bad", "cpus": 0.1, "mem": 16,
        "container": {"docker": {"image": "Busy Box"}}});
    let error = cluster
        .client
        .send_json::<AppView>(
            Method::POST,
            "/v2/apps",
            &serde_json::to_vec(&bad_reference).unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(422));
    assert!(
        error.to_string().contains("container.docker.image"),
        "{error}"
    );
    let _ = cluster.shutdown.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_does_not_read_its_link_cannot_stall_the_master() {
    let cluster = FakeCluster::start(0).await;
    // An agent whose command link nobody reads.
    let (link, stuck) = mpsc::channel(LINK_QUEUE_MAX);
    let agent = dcos_core::Agent {
        id: "stuck".into(),
        hostname: "stuck".into(),
        url: "http://127.0.0.1:1".into(),
        resources: Resources {
            cpus_milli: 1_000_000,
            mem_mib: 1_000_000,
            disk_mib: 0,
        },
        state: dcos_core::AgentState::Active,
        registered_at_ms: 1,
        ports: vec![],
        certificate: None,
        certificate_serial: None,
        version: String::new(),
        images: Default::default(),
        attributes: Default::default(),
    };
    cluster
        .to_master
        .send(dcos_rs::link::ToMaster::Register {
            agent,
            tasks: vec![],
            link,
        })
        .await
        .unwrap();
    let master = cluster.master.clone();
    wait_for("registration", Duration::from_secs(10), || {
        let connected = master.is_connected("stuck");
        async move { connected.then_some(()) }
    })
    .await;
    let instances = LINK_QUEUE_MAX + 100;
    let app = serde_json::json!({"id": "/many", "cmd": "x", "cpus": 0.01, "mem": 4,
        "instances": instances});
    let _: AppView = cluster
        .client
        .send_json(Method::POST, "/v2/apps", &serde_json::to_vec(&app).unwrap())
        .await
        .unwrap();
    // The master sends launches only while the link has room (a quarter is kept for
    // kills), then places nothing more there, and keeps serving.
    let sent = LINK_QUEUE_MAX - LINK_QUEUE_MAX / 4;
    wait_for(
        "the link filled to its launch room",
        Duration::from_secs(60),
        || {
            let queued = stuck.len();
            async move { (queued == sent).then_some(()) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stuck.len(), sent, "no launch beyond the room");
    assert!(cluster.master.is_connected("stuck"));
    let apps: dcos_api::AppsEnvelope = cluster.client.get("/v2/apps").await.unwrap();
    assert_eq!(apps.apps.len(), 1);
    // Nothing it could not take was recorded: the rest wait (there is no other agent).
    let tasks = cluster.tasks().await;
    assert_eq!(tasks.len(), sent);
    assert!(tasks.iter().all(|t| t.state == TaskState::Staging));
    // A kill still fits: the master is not stuck with it.
    let _: serde_json::Value = cluster
        .client
        .send_json(Method::DELETE, "/v2/apps/many", b"")
        .await
        .unwrap();
    wait_for("the kills queued", Duration::from_secs(10), || {
        let queued = stuck.len();
        async move { (queued > sent).then_some(()) }
    })
    .await;
    let _ = cluster.shutdown.send(true);
}
