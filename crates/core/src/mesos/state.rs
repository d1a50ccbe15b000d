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
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameworksState {
    pub frameworks: BTreeMap<String, FrameworkRecord>,
    /// Ids of removed frameworks: they may not subscribe again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub removed: BTreeSet<String>,
}

impl FrameworksState {
    pub fn is_empty(&self) -> bool {
        self.frameworks.is_empty() && self.removed.is_empty()
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
}
