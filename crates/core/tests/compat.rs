//! Replicated data written before tasks had owners and frameworks had their own parts of the
//! state still loads. The fixtures were written by the code of commit 1eb945e (the format
//! this one replaced): `v1-log.json` is a log touching every command kind, `v1-outcomes.json`
//! what applying it answered then, `v1-state.json` the state it left (a snapshot's content).

use dcos_core::{ClusterState, Command, Outcome, TaskOwner};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn a_log_of_the_previous_format_replays_to_the_same_outcomes_and_state() {
    let log: Vec<Command> = serde_json::from_str(&fixture("v1-log.json")).unwrap();
    let outcomes_then: Vec<Outcome> = serde_json::from_str(&fixture("v1-outcomes.json")).unwrap();
    let mut state = ClusterState::default();
    let outcomes_now: Vec<Outcome> = log.iter().flat_map(|c| state.apply_entry(c)).collect();
    assert_eq!(outcomes_now, outcomes_then);
    state.assert_invariants();

    // The app history kept since (versions, lastScalingAt, the creation time) is rebuilt by
    // a replay but was never in the old snapshot (a record without a creation time refuses
    // the rollbacks that would need it); everything else must agree.
    let snapshot_then: ClusterState = serde_json::from_str(&fixture("v1-state.json")).unwrap();
    for record in state.services.apps.values_mut() {
        assert!(!record.versions.is_empty(), "a replay keeps versions");
        record.versions.clear();
        record.last_scaling_ms = 0;
        assert!(
            record.created_ms > 0,
            "a replay knows when an app was created"
        );
        record.created_ms = 0;
    }
    assert_eq!(state, snapshot_then, "replay and old snapshot agree");
}

#[test]
fn a_snapshot_of_the_previous_format_restores_apps_and_task_owners() {
    let state: ClusterState = serde_json::from_str(&fixture("v1-state.json")).unwrap();
    state.assert_invariants();
    assert_eq!(
        state.services.apps.keys().collect::<Vec<_>>(),
        vec!["/db"],
        "apps moved under services"
    );
    assert_eq!(
        state.tasks["t4"].owner,
        TaskOwner::Service {
            app_id: "/db".into(),
            config_version_ms: 60
        }
    );
    // Written in the new format, it reads back unchanged.
    let again: ClusterState =
        serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert_eq!(again, state);
    let json = serde_json::to_value(&state).unwrap();
    assert!(json.get("apps").is_none() && json["services"]["apps"].get("/db").is_some());
}
