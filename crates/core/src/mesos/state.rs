//! What is replicated of external frameworks: each registered framework (its id, who it
//! is, its role and capabilities, its failover timeout) and whether its subscription is
//! open. Offers and filters are leader memory (`allocator`); the tasks a framework launched
//! are tasks like any (`TaskOwner::Framework`).
//!
//! A framework that disconnects keeps its tasks for its `failover_timeout`; one that
//! re-subscribes with its id within it carries on; past it (`past_failover`) the leader
//! removes it (`RemoveFramework`), which asks its live tasks to be killed. A removed
//! framework's id cannot subscribe again.

use crate::command::Reject;
use crate::mesos::allocator::RoleConfig;
use crate::types::{Resources, Task, TaskOwner, TaskState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The ids of the built-in frameworks as the allocator and the Mesos APIs know them: their
/// tasks count in DRF and quota like any framework's.
pub const SERVICES_FRAMEWORK_ID: &str = "dcos-rs-services";
pub const JOBS_FRAMEWORK_ID: &str = "dcos-rs-jobs";
/// The role of frameworks that name none, and of the built-in ones.
pub const DEFAULT_ROLE: &str = "*";

/// Which framework a task is of: an external framework's id, or a built-in one's.
pub fn framework_of(owner: &TaskOwner) -> &str {
    match owner {
        TaskOwner::Service { .. } => SERVICES_FRAMEWORK_ID,
        TaskOwner::JobRun { .. } => JOBS_FRAMEWORK_ID,
        TaskOwner::Framework { framework_id } => framework_id,
    }
}

/// Longest failover timeout a framework may ask for: a week (Mesos has no limit; a
/// disconnected framework's tasks must not be kept for ever by accident).
pub const FAILOVER_TIMEOUT_MAX_MS: u64 = 7 * 86_400_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FrameworkRecord {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub user: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// How long its tasks are kept after it disconnects (at most `FAILOVER_TIMEOUT_MAX_MS`).
    pub failover_timeout_ms: u64,
    pub registered_ms: u64,
    /// When its subscription ended without a teardown; `None` while subscribed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_ms: Option<u64>,
}

/// Most status updates kept unacknowledged per task: past it the oldest live-state update
/// is dropped (the latest, and a terminal one, are always kept), so a framework that never
/// acknowledges cannot grow the state without end.
pub const UPDATES_PER_TASK_MAX: usize = 8;

/// A status update of a framework's task, replicated until the framework acknowledges it
/// (Mesos's agents keep them in their status update managers; here the log does, so a new
/// leader sends again what the old one had not seen acknowledged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusUpdate {
    /// What the framework acknowledges: unique per update (`update_uuid`).
    pub uuid: String,
    pub state: TaskState,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameworksState {
    pub frameworks: BTreeMap<String, FrameworkRecord>,
    /// Ids of removed frameworks: they may not subscribe again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub removed: BTreeSet<String>,
    /// Status updates not yet acknowledged, by task, oldest first; sent in that order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub updates: BTreeMap<String, Vec<StatusUpdate>>,
    /// Updates made so far: the next one's uuid is made of it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub updates_made: u64,
    /// Roles' weights and quotas as operators set them (Mesos's `/weights` and `/quota`);
    /// a role not here has weight 1 and no quota.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, RoleConfig>,
}

/// Most roles with settings of their own.
pub const ROLES_MAX: usize = 1024;
/// Longest role name.
pub const ROLE_NAME_MAX: usize = 128;

/// Whether `role` is a role name as Mesos takes it: not empty, no whitespace or control
/// characters, `/` only between parts (a hierarchy), no part `.`, `..` or starting with `-`.
pub fn check_role(role: &str) -> Result<(), String> {
    if role.is_empty() {
        return Err("a role name is not empty".into());
    }
    if role.len() > ROLE_NAME_MAX {
        return Err(format!("a role name has at most {ROLE_NAME_MAX} bytes"));
    }
    if role == "*" {
        return Ok(());
    }
    if let Some(c) = role.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "a role name has no whitespace or control characters ({c:?})"
        ));
    }
    for part in role.split('/') {
        if part.is_empty() {
            return Err("a role name's `/` separates non-empty parts".into());
        }
        if part == "." || part == ".." || part == "*" {
            return Err(format!("a role name has no part `{part}`"));
        }
        if part.starts_with('-') {
            return Err(format!(
                "a part of a role name does not start with `-` ({part})"
            ));
        }
    }
    Ok(())
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The uuid of the `n`th update: 16 bytes (`dcos`, 4 zero bytes, `n` big-endian) in
/// standard base64, as Mesos writes its 16-byte UUIDs in JSON.
pub fn update_uuid(n: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(b"dcos");
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    base64(&bytes)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn invalid_role(role: &str, reason: impl Into<String>) -> Reject {
    Reject::InvalidRole {
        role: role.to_string(),
        reason: reason.into(),
    }
}

/// Keeps `config` for `role`, or forgets the role when it is back to the defaults.
fn set_role(roles: &mut BTreeMap<String, RoleConfig>, role: &str, config: RoleConfig) {
    if config == RoleConfig::default() {
        roles.remove(role);
    } else {
        roles.insert(role.to_string(), config);
    }
}

impl FrameworksState {
    pub fn is_empty(&self) -> bool {
        self.frameworks.is_empty()
            && self.removed.is_empty()
            && self.updates.is_empty()
            && self.roles.is_empty()
    }

    /// A role's settings (the defaults for a role not set).
    pub fn role(&self, role: &str) -> RoleConfig {
        self.roles.get(role).cloned().unwrap_or_default()
    }

    /// `UpdateWeights`: each role's weight (finite, > 0); all or none are taken.
    pub(crate) fn update_weights(&mut self, weights: &[(String, f64)]) -> Result<(), Reject> {
        for (role, weight) in weights {
            check_role(role).map_err(|reason| invalid_role(role, reason))?;
            if !weight.is_finite() || *weight <= 0.0 {
                return Err(invalid_role(
                    role,
                    format!("a weight is a number above 0, not {weight}"),
                ));
            }
        }
        let mut roles = self.roles.clone();
        for (role, weight) in weights {
            let mut config = self.role(role);
            config.weight = *weight;
            set_role(&mut roles, role, config);
        }
        self.take_roles(roles)
    }

    /// `UpdateQuota`: what `role` is guaranteed and at most gets (a guarantee within the
    /// limit); an empty guarantee and no limit remove its quota.
    pub(crate) fn update_quota(
        &mut self,
        role: &str,
        guarantee: &Resources,
        limit: Option<&Resources>,
    ) -> Result<(), Reject> {
        check_role(role).map_err(|reason| invalid_role(role, reason))?;
        if let Some(limit) = limit {
            if !guarantee.fits_in(limit) {
                return Err(invalid_role(
                    role,
                    format!("the guarantee {guarantee:?} is above the limit {limit:?}"),
                ));
            }
        }
        let mut roles = self.roles.clone();
        let mut config = self.role(role);
        config.guarantee = *guarantee;
        config.limit = limit.copied();
        set_role(&mut roles, role, config);
        self.take_roles(roles)
    }

    fn take_roles(&mut self, roles: BTreeMap<String, RoleConfig>) -> Result<(), Reject> {
        if roles.len() > ROLES_MAX && roles.len() > self.roles.len() {
            return Err(Reject::InvalidRole {
                role: String::new(),
                reason: format!("at most {ROLES_MAX} roles have settings of their own"),
            });
        }
        self.roles = roles;
        Ok(())
    }

    /// A task changed state: a framework's task (its framework registered) gets an update
    /// to send. Live states reached in passing are dropped past `UPDATES_PER_TASK_MAX`.
    pub(crate) fn task_changed(&mut self, task: &Task) {
        let TaskOwner::Framework { framework_id } = &task.owner else {
            return;
        };
        let Some(framework) = self.frameworks.get(framework_id) else {
            return;
        };
        // TASK_KILLING only to frameworks that said they know it (Mesos's rule).
        if task.state == TaskState::Killing
            && !framework
                .capabilities
                .iter()
                .any(|c| c == "TASK_KILLING_STATE")
        {
            return;
        }
        self.updates_made += 1;
        let update = StatusUpdate {
            uuid: update_uuid(self.updates_made),
            state: task.state,
            at_ms: task.updated_at_ms,
            message: task.message.clone(),
            exit_code: task.exit_code,
        };
        let queue = self.updates.entry(task.id.clone()).or_default();
        queue.push(update);
        if queue.len() > UPDATES_PER_TASK_MAX {
            let last = queue.len() - 1;
            let dropped = queue
                .iter()
                .position(|u| !u.state.is_terminal())
                .filter(|at| *at != last)
                .unwrap_or(0);
            queue.remove(dropped);
        }
    }

    /// `AcknowledgeUpdate`: the framework has the task's update `uuid`, and so every one
    /// before it. An unknown uuid (acknowledged already, or never made) changes nothing.
    pub(crate) fn acknowledge(
        &mut self,
        framework_id: &str,
        task: Option<&Task>,
        uuid: &str,
    ) -> Result<(), Reject> {
        if !self.frameworks.contains_key(framework_id) {
            return Err(Reject::UnknownFramework {
                framework_id: framework_id.to_string(),
            });
        }
        let Some(task) = task.filter(
            |t| matches!(&t.owner, TaskOwner::Framework { framework_id: f } if f == framework_id),
        ) else {
            return Ok(());
        };
        if let Some(queue) = self.updates.get_mut(&task.id) {
            if let Some(at) = queue.iter().position(|u| u.uuid == uuid) {
                queue.drain(..=at);
            }
            if queue.is_empty() {
                self.updates.remove(&task.id);
            }
        }
        Ok(())
    }

    /// A task is forgotten: its updates go with it.
    pub(crate) fn task_expunged(&mut self, task_id: &str) {
        self.updates.remove(task_id);
    }

    /// `SubscribeFramework`: a new framework, or one re-subscribing with its id (which must
    /// be registered and not removed); either is connected afterwards. A re-subscription
    /// takes the new info (name, capabilities, timeout) but keeps its role and registration.
    pub(crate) fn subscribe(
        &mut self,
        framework: &FrameworkRecord,
        resubscribe: bool,
        at_ms: u64,
    ) -> Result<(), Reject> {
        let id = &framework.id;
        if self.removed.contains(id) {
            return Err(Reject::FrameworkRemoved {
                framework_id: id.clone(),
            });
        }
        match self.frameworks.get_mut(id) {
            Some(current) => {
                let role = current.role.clone();
                let registered_ms = current.registered_ms;
                *current = framework.clone();
                current.role = role;
                current.registered_ms = registered_ms;
                current.disconnected_ms = None;
                current.failover_timeout_ms =
                    framework.failover_timeout_ms.min(FAILOVER_TIMEOUT_MAX_MS);
            }
            None if resubscribe => {
                return Err(Reject::UnknownFramework {
                    framework_id: id.clone(),
                })
            }
            None => {
                let mut record = framework.clone();
                record.registered_ms = at_ms;
                record.disconnected_ms = None;
                record.failover_timeout_ms =
                    record.failover_timeout_ms.min(FAILOVER_TIMEOUT_MAX_MS);
                self.frameworks.insert(id.clone(), record);
            }
        }
        Ok(())
    }

    /// `FrameworkDisconnected`: its subscription ended; its failover timeout runs from now.
    pub(crate) fn disconnected(&mut self, framework_id: &str, at_ms: u64) -> Result<(), Reject> {
        let record =
            self.frameworks
                .get_mut(framework_id)
                .ok_or_else(|| Reject::UnknownFramework {
                    framework_id: framework_id.to_string(),
                })?;
        if record.disconnected_ms.is_none() {
            record.disconnected_ms = Some(at_ms);
        }
        Ok(())
    }

    /// `RemoveFramework` (a teardown, or its failover timeout ran out): gone for good.
    pub(crate) fn remove(&mut self, framework_id: &str) -> Result<(), Reject> {
        self.frameworks
            .remove(framework_id)
            .ok_or_else(|| Reject::UnknownFramework {
                framework_id: framework_id.to_string(),
            })?;
        self.removed.insert(framework_id.to_string());
        Ok(())
    }

    /// A task of `framework_id` may be launched only while it is registered.
    pub(crate) fn check_launch(&self, framework_id: &str) -> Result<(), Reject> {
        if self.frameworks.contains_key(framework_id) {
            Ok(())
        } else {
            Err(Reject::UnknownFramework {
                framework_id: framework_id.to_string(),
            })
        }
    }

    /// Frameworks disconnected for longer than their failover timeout at `now_ms`.
    pub fn past_failover(&self, now_ms: u64) -> Vec<String> {
        self.frameworks
            .values()
            .filter(|f| {
                f.disconnected_ms
                    .is_some_and(|at| now_ms >= at.saturating_add(f.failover_timeout_ms))
            })
            .map(|f| f.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Outcome};
    use crate::state::ClusterState;
    use crate::types::{Task, TaskOwner, TaskState};

    pub(crate) fn framework(id: &str, timeout_ms: u64) -> FrameworkRecord {
        FrameworkRecord {
            id: id.into(),
            name: "minimal".into(),
            user: "nobody".into(),
            role: "*".into(),
            principal: None,
            hostname: None,
            capabilities: vec!["PARTITION_AWARE".into()],
            failover_timeout_ms: timeout_ms,
            registered_ms: 0,
            disconnected_ms: None,
        }
    }

    fn subscribe(id: &str, resubscribe: bool, at_ms: u64) -> Command {
        Command::SubscribeFramework {
            framework: framework(id, 10_000),
            resubscribe,
            at_ms,
        }
    }

    #[test]
    fn a_framework_keeps_its_tasks_within_its_failover_timeout_and_loses_them_past_it() {
        let mut c = crate::state::tests::cluster(&[("a1", 4_000, 4_096)], &[]);
        assert_eq!(c.apply(&subscribe("f1", false, 100)), Outcome::Applied);
        let mut task: Task = crate::state::tests::task("t1", "/unused", "a1", 0);
        task.owner = TaskOwner::Framework {
            framework_id: "f1".into(),
        };
        assert_eq!(
            c.apply(&Command::LaunchTask { task: task.clone() }),
            Outcome::Applied
        );
        // Disconnected at 1,000: kept until 11,000; a re-subscription clears it.
        let gone = Command::FrameworkDisconnected {
            framework_id: "f1".into(),
            at_ms: 1_000,
        };
        assert_eq!(c.apply(&gone), Outcome::Applied);
        assert!(c.frameworks.past_failover(10_999).is_empty());
        assert_eq!(c.frameworks.past_failover(11_000), vec!["f1".to_string()]);
        assert_eq!(c.apply(&subscribe("f1", true, 5_000)), Outcome::Applied);
        assert!(c.frameworks.past_failover(20_000).is_empty());
        assert_eq!(c.frameworks.frameworks["f1"].registered_ms, 100);
        // Removed: its live task is asked to be killed, and its id cannot come back.
        let remove = Command::RemoveFramework {
            framework_id: "f1".into(),
            at_ms: 30_000,
        };
        assert_eq!(c.apply(&remove), Outcome::Applied);
        assert!(c.tasks["t1"].kill_requested);
        assert_eq!(c.tasks["t1"].state, TaskState::Staging);
        assert_eq!(
            c.apply(&subscribe("f1", true, 31_000)),
            Outcome::Rejected(Reject::FrameworkRemoved {
                framework_id: "f1".into()
            })
        );
        // Launches need a registered framework; an unknown id cannot re-subscribe.
        task.id = "t2".into();
        assert_eq!(
            c.apply(&Command::LaunchTask { task }),
            Outcome::Rejected(Reject::UnknownFramework {
                framework_id: "f1".into()
            })
        );
        assert_eq!(
            c.apply(&subscribe("f9", true, 31_000)),
            Outcome::Rejected(Reject::UnknownFramework {
                framework_id: "f9".into()
            })
        );
    }

    use crate::state::tests::status;

    fn framework_task(c: &mut ClusterState, framework_id: &str, id: &str) {
        let mut task: Task = crate::state::tests::task(id, "/unused", "a1", 0);
        task.owner = TaskOwner::Framework {
            framework_id: framework_id.into(),
        };
        assert_eq!(c.apply(&Command::LaunchTask { task }), Outcome::Applied);
    }

    fn pending(c: &ClusterState, task_id: &str) -> Vec<(TaskState, String)> {
        c.frameworks.updates.get(task_id).map_or(Vec::new(), |q| {
            q.iter().map(|u| (u.state, u.uuid.clone())).collect()
        })
    }

    #[test]
    fn status_updates_wait_in_order_until_acknowledged() {
        let mut c = crate::state::tests::cluster(&[("a1", 4_000, 4_096)], &[]);
        c.apply(&subscribe("f1", false, 100));
        framework_task(&mut c, "f1", "f1.t1");
        // The launch itself is no update (Mesos sends no TASK_STAGING); each change is.
        assert!(pending(&c, "f1.t1").is_empty());
        c.apply(&status("f1.t1", TaskState::Starting, 200));
        c.apply(&status("f1.t1", TaskState::Running, 300));
        // A late or repeated report changes nothing, so makes no update.
        c.apply(&status("f1.t1", TaskState::Running, 310));
        c.apply(&status("f1.t1", TaskState::Starting, 320));
        let queue = pending(&c, "f1.t1");
        assert_eq!(
            queue.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![TaskState::Starting, TaskState::Running]
        );
        assert_eq!(queue[0].1, update_uuid(1));
        assert_ne!(queue[0].1, queue[1].1);
        assert_eq!(update_uuid(1).len(), 24, "16 bytes in padded base64");
        // Acknowledging the second takes the first with it; an unknown uuid, another
        // framework's acknowledgement, or one of an unknown task change nothing.
        let ack = |framework: &str, task: &str, uuid: &str| Command::AcknowledgeUpdate {
            framework_id: framework.into(),
            task_id: task.into(),
            uuid: uuid.into(),
        };
        c.apply(&subscribe("f2", false, 100));
        assert_eq!(c.apply(&ack("f2", "f1.t1", &queue[1].1)), Outcome::Applied);
        assert_eq!(c.apply(&ack("f1", "f1.t1", "nonesuch")), Outcome::Applied);
        assert_eq!(c.apply(&ack("f1", "f1.t9", &queue[1].1)), Outcome::Applied);
        assert_eq!(pending(&c, "f1.t1").len(), 2);
        assert_eq!(c.apply(&ack("f1", "f1.t1", &queue[1].1)), Outcome::Applied);
        assert!(pending(&c, "f1.t1").is_empty());
        assert!(c.frameworks.updates.is_empty());
        assert_eq!(
            c.apply(&ack("f9", "f1.t1", "x")),
            Outcome::Rejected(Reject::UnknownFramework {
                framework_id: "f9".into()
            })
        );
        // TASK_KILLING only for frameworks with TASK_KILLING_STATE (f1 has not).
        c.apply(&status("f1.t1", TaskState::Killing, 400));
        assert!(pending(&c, "f1.t1").is_empty());
        // The end, then the task's agent's loss: no update after a terminal state.
        c.apply(&Command::TaskStatus {
            task_id: "f1.t1".into(),
            state: TaskState::Failed,
            at_ms: 500,
            message: None,
            exit_code: Some(3),
            output: None,
        });
        assert_eq!(pending(&c, "f1.t1")[0].0, TaskState::Failed);
        assert_eq!(c.frameworks.updates["f1.t1"][0].exit_code, Some(3));
        // Expunged: its updates go with it.
        assert_eq!(
            c.apply(&Command::ExpungeTask {
                task_id: "f1.t1".into()
            }),
            Outcome::Applied
        );
        assert!(c.frameworks.updates.is_empty());
    }

    #[test]
    fn a_framework_that_never_acknowledges_keeps_a_bounded_queue_with_its_last_state() {
        let mut c = crate::state::tests::cluster(&[("a1", 4_000, 4_096)], &[]);
        c.apply(&subscribe("f1", false, 100));
        framework_task(&mut c, "f1", "f1.t1");
        c.apply(&status("f1.t1", TaskState::Running, 200));
        // The agent goes silent and comes back, again and again.
        for i in 0..20u64 {
            c.apply(&Command::MarkAgentUnreachable {
                agent_id: "a1".into(),
                at_ms: 1_000 + i * 10,
            });
            c.apply(&Command::RegisterAgent {
                agent: crate::state::tests::agent("a1", 4_000, 4_096),
            });
            c.apply(&status("f1.t1", TaskState::Running, 1_005 + i * 10));
        }
        c.apply(&status("f1.t1", TaskState::Finished, 5_000));
        let queue = pending(&c, "f1.t1");
        assert_eq!(queue.len(), UPDATES_PER_TASK_MAX);
        assert_eq!(queue.last().unwrap().0, TaskState::Finished);
        // Removed: nobody is left to acknowledge.
        framework_task(&mut c, "f1", "f1.t2");
        c.apply(&status("f1.t2", TaskState::Running, 6_000));
        c.apply(&Command::RemoveFramework {
            framework_id: "f1".into(),
            at_ms: 7_000,
        });
        assert!(pending(&c, "f1.t2").is_empty());
        assert!(c.tasks["f1.t2"].kill_requested);
    }

    #[test]
    fn a_failover_timeout_is_bounded_and_the_state_round_trips() {
        let mut s = FrameworksState::default();
        s.subscribe(&framework("f", u64::MAX), false, 1).unwrap();
        assert_eq!(
            s.frameworks["f"].failover_timeout_ms,
            FAILOVER_TIMEOUT_MAX_MS
        );
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<FrameworksState>(&json).unwrap(), s);
        let empty: ClusterState =
            serde_json::from_str(&serde_json::to_string(&ClusterState::default()).unwrap())
                .unwrap();
        assert!(empty.frameworks.is_empty());
        // A snapshot keeps them.
        let mut c = ClusterState::default();
        c.apply(&Command::SubscribeFramework {
            framework: framework("f", 1_000),
            resubscribe: false,
            at_ms: 5,
        });
        let restored: ClusterState =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(restored.frameworks, c.frameworks);
        assert_eq!(restored.frameworks.frameworks["f"].registered_ms, 5);
        assert!(!serde_json::to_string(&ClusterState::default())
            .unwrap()
            .contains("frameworks"));
    }

    #[test]
    fn operators_set_weights_and_quotas_and_bad_ones_change_nothing() {
        let mut c = ClusterState::default();
        let weights = |w: &[(&str, f64)]| Command::UpdateWeights {
            weights: w.iter().map(|(r, w)| (r.to_string(), *w)).collect(),
        };
        assert_eq!(
            c.apply(&weights(&[("analytics", 3.0), ("web", 1.5)])),
            Outcome::Applied
        );
        assert_eq!(c.frameworks.role("analytics").weight, 3.0);
        assert_eq!(c.frameworks.role("other").weight, 1.0);
        // All or nothing: one bad weight or role name takes none.
        for bad in [
            weights(&[("web", 2.0), ("analytics", 0.0)]),
            weights(&[("web", 2.0), ("analytics", f64::NAN)]),
            weights(&[("web", 2.0), ("a b", 1.0)]),
            weights(&[("web", 2.0), ("a//b", 1.0)]),
            weights(&[("web", 2.0), ("-a", 1.0)]),
            weights(&[("web", 2.0), ("", 1.0)]),
        ] {
            assert!(
                matches!(c.apply(&bad), Outcome::Rejected(Reject::InvalidRole { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(c.frameworks.role("web").weight, 1.5);
        let res = |cpus: u64, mem: u64| Resources {
            cpus_milli: cpus * 1000,
            mem_mib: mem,
            disk_mib: 0,
        };
        let quota =
            |role: &str, guarantee: Resources, limit: Option<Resources>| Command::UpdateQuota {
                role: role.into(),
                guarantee,
                limit,
            };
        assert_eq!(
            c.apply(&quota("web", res(2, 1024), Some(res(4, 4096)))),
            Outcome::Applied
        );
        assert_eq!(c.frameworks.role("web").guarantee, res(2, 1024));
        assert_eq!(c.frameworks.role("web").weight, 1.5, "the weight is kept");
        assert!(matches!(
            c.apply(&quota("web", res(8, 1024), Some(res(4, 4096)))),
            Outcome::Rejected(Reject::InvalidRole { .. })
        ));
        // Back to the defaults: the role is forgotten.
        assert_eq!(c.apply(&weights(&[("web", 1.0)])), Outcome::Applied);
        assert_eq!(
            c.apply(&quota("web", Resources::default(), None)),
            Outcome::Applied
        );
        assert_eq!(
            c.frameworks.roles.keys().collect::<Vec<_>>(),
            vec!["analytics"]
        );
        assert_eq!(check_role("eng/dev"), Ok(()));
        assert_eq!(check_role("*"), Ok(()));
        assert!(check_role("eng/").is_err() && check_role("eng/..").is_err());
    }
}
