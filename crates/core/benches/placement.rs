//! `make bench-placement`: the pure services planner and placement on a large cluster, no
//! I/O: one planning round that places every instance of many apps on 1,000 agents, and
//! a round on the converged cluster. Numbers only (format: ARCHITECTURE.md, Benchmarks).

use dcos_core::services::planner::{plan, Action, PlanInput};
use dcos_core::services::{build_task, task_id};
use dcos_core::{
    Agent, AgentState, AppSpec, ClusterState, Command, PortRange, Resources, TaskState,
};
use std::time::Instant;

const AGENTS: usize = 1_000;
const APPS: usize = 50;
const INSTANCES: u32 = 200;

fn agent(i: usize) -> Agent {
    Agent {
        id: format!("agent-{i:04}"),
        hostname: format!("h{i}"),
        url: format!("http://h{i}:5051"),
        resources: Resources {
            cpus_milli: 16_000,
            mem_mib: 65_536,
            disk_mib: 1_000_000,
        },
        state: AgentState::Active,
        registered_at_ms: 1,
        ports: vec![PortRange {
            begin: 31000,
            end: 32000,
        }],
        certificate: None,
        certificate_serial: None,
        version: String::new(),
        images: Default::default(),
        attributes: Default::default(),
    }
}

fn app(i: usize) -> AppSpec {
    let mut spec: AppSpec = serde_json::from_value(serde_json::json!({
        "id": format!("/app-{i}"), "cmd": "sleep 1000", "cpus": 0.1, "mem": 64,
        "instances": INSTANCES, "portDefinitions": [{"port": 0}]
    }))
    .expect("valid app");
    spec.normalize_and_validate().expect("valid app");
    spec
}

fn main() {
    let mut state = ClusterState::default();
    for i in 0..AGENTS {
        state.apply(&Command::RegisterAgent { agent: agent(i) });
    }
    for i in 0..APPS {
        state.apply(&Command::PutApp {
            app: app(i),
            create: true,
            at_ms: 1,
            deployment_id: format!("d{i}"),
        });
    }
    let started = Instant::now();
    let round = plan(&state, &PlanInput::at(10));
    let place_ms = started.elapsed().as_secs_f64() * 1e3;
    let launches: Vec<&Action> = round
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Launch { .. }))
        .collect();
    assert_eq!(launches.len(), APPS * INSTANCES as usize, "everything fits");

    // Record the tasks, running, to time a round on the converged cluster.
    for (n, action) in launches.iter().enumerate() {
        let Action::Launch {
            app_id,
            agent_id,
            ports,
        } = action
        else {
            unreachable!()
        };
        let record = &state.services.apps[app_id];
        let task = build_task(
            record,
            agent_id,
            ports.clone(),
            task_id(app_id, &n.to_string()),
            10,
        );
        let id = task.id.clone();
        state.apply(&Command::LaunchTask { task });
        state.apply(&Command::TaskStatus {
            task_id: id,
            state: TaskState::Running,
            at_ms: 11,
            message: None,
            exit_code: None,
            output: None,
        });
    }
    let started = Instant::now();
    let converged = plan(&state, &PlanInput::at(20));
    let converged_ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(converged.actions.is_empty());

    let placements = launches.len() as f64;
    println!("BENCH placement_round_{AGENTS}_agents {place_ms:.1} ms");
    println!(
        "BENCH placements {:.0} per_s",
        placements / (place_ms / 1e3)
    );
    println!(
        "BENCH plan_round_converged_{}_tasks {converged_ms:.1} ms",
        launches.len()
    );
}
