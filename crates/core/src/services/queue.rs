//! Why an app waits (Marathon's `/v2/queue`): the placement module's reasons per agent,
//! summed the way Marathon sums declined offers. Each agent counts once, at the first
//! reason in Marathon's funnel order that it fails; `processed` is how many agents reached
//! that stage.

use crate::placement::{PassedOver, Resource, WhyNot};

/// Marathon's reasons, in its funnel order (those this system can give).
pub const FUNNEL: &[&str] = &[
    "UnfulfilledRole",
    "UnfulfilledConstraint",
    "NoCorrespondingReservationFound",
    "AgentMaintenance",
    "InsufficientCpus",
    "InsufficientMemory",
    "InsufficientDisk",
    "InsufficientGpus",
    "InsufficientPorts",
    "DeclinedScarceResources",
];

/// Marathon's name for a reason. An agent without the app's image fails a placement
/// condition of the app, as a constraint would.
pub fn marathon_reason(why: &WhyNot) -> &'static str {
    match why {
        WhyNot::NotActive { .. } | WhyNot::Draining | WhyNot::NotConnected => "AgentMaintenance",
        WhyNot::Insufficient { resource, .. } => match resource {
            Resource::Cpus => "InsufficientCpus",
            Resource::Mem => "InsufficientMemory",
            Resource::Disk => "InsufficientDisk",
        },
        WhyNot::PortsUnavailable { .. } => "InsufficientPorts",
        WhyNot::ImageMissing { .. } | WhyNot::Constraint { .. } => "UnfulfilledConstraint",
    }
}

/// `(reason, declined, processed)` for every reason of the funnel, in its order.
pub fn reject_summary(passed_over: &[PassedOver]) -> Vec<(&'static str, usize, usize)> {
    let first_failures: Vec<usize> = passed_over
        .iter()
        .filter_map(|p| {
            p.reasons
                .iter()
                .filter_map(|r| FUNNEL.iter().position(|f| *f == marathon_reason(r)))
                .min()
        })
        .collect();
    let mut processed = passed_over.len();
    FUNNEL
        .iter()
        .enumerate()
        .map(|(stage, reason)| {
            let declined = first_failures.iter().filter(|f| **f == stage).count();
            let row = (*reason, declined, processed);
            processed -= declined;
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_agent_counts_once_at_its_first_reason_in_funnel_order() {
        let mem = WhyNot::Insufficient {
            resource: Resource::Mem,
            needed: 512,
            free: 64,
        };
        let cpus = WhyNot::Insufficient {
            resource: Resource::Cpus,
            needed: 2000,
            free: 100,
        };
        let passed_over = vec![
            PassedOver {
                agent_id: "a1".into(),
                reasons: vec![mem.clone(), cpus.clone()],
            },
            PassedOver {
                agent_id: "a2".into(),
                reasons: vec![mem],
            },
            PassedOver {
                agent_id: "a3".into(),
                reasons: vec![WhyNot::Draining, cpus],
            },
        ];
        let summary = reject_summary(&passed_over);
        let row = |name: &str| *summary.iter().find(|r| r.0 == name).unwrap();
        assert_eq!(row("UnfulfilledRole"), ("UnfulfilledRole", 0, 3));
        assert_eq!(row("AgentMaintenance"), ("AgentMaintenance", 1, 3));
        assert_eq!(row("InsufficientCpus"), ("InsufficientCpus", 1, 2));
        assert_eq!(row("InsufficientMemory"), ("InsufficientMemory", 1, 1));
        assert_eq!(row("InsufficientDisk"), ("InsufficientDisk", 0, 0));
        assert_eq!(summary.len(), FUNNEL.len());
    }
}
