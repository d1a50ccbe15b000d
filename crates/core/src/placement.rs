//! Placement, one module for every framework: does a task fit an agent, which agent gets it,
//! and why each agent that was passed over could not take it.
//!
//! Pure: (cluster state, what a task asks for) -> an agent and its host ports, or the reasons
//! per agent as data (`WhyNot`). Frameworks decide *what* to run; this decides *where*. Not
//! here: attributes and constraints (they arrive with the services API), fairness between
//! frameworks (the allocator).

use crate::state::ClusterState;
use crate::types::{Agent, AgentState, PortRange, Resources};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What one task asks of an agent.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub resources: Resources,
    /// Host ports: a fixed port, or 0 for any free port of the agent's ranges.
    pub ports: &'a [u16],
    /// Presence key of the task's image (see `Agent::images`); agents without it are
    /// passed over, since an agent runs only images its store holds.
    pub image: Option<&'a str>,
    /// Marathon's placement constraints, with how the app's tasks are spread so far.
    pub constraints: &'a [crate::constraints::Constraint],
    pub spread: Option<&'a crate::constraints::Spread>,
}

/// A resource a task can lack on an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    /// In milli-cpus.
    Cpus,
    /// In MiB.
    Mem,
    /// In MiB.
    Disk,
}

impl Resource {
    pub const ALL: [Resource; 3] = [Resource::Cpus, Resource::Mem, Resource::Disk];

    /// The field's name in Marathon's definitions (`cpus`, `mem`, `disk`).
    pub fn name(&self) -> &'static str {
        match self {
            Resource::Cpus => "cpus",
            Resource::Mem => "mem",
            Resource::Disk => "disk",
        }
    }

    /// The amount of this resource in `resources`, in its unit (milli-cpus or MiB).
    pub fn of(&self, resources: &Resources) -> u64 {
        match self {
            Resource::Cpus => resources.cpus_milli,
            Resource::Mem => resources.mem_mib,
            Resource::Disk => resources.disk_mib,
        }
    }

    /// `amount` in this resource's unit, as people read it: `1.5 cpus`, `512 MiB`.
    pub fn show(&self, amount: u64) -> String {
        match self {
            Resource::Cpus => format!("{} cpus", amount as f64 / 1000.0),
            Resource::Mem | Resource::Disk => format!("{amount} MiB"),
        }
    }
}

/// Why an agent could not take a task. Every agent passed over gets all that apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhyNot {
    /// The agent is unreachable (or gone): it gets no new task.
    NotActive { state: &'static str },
    /// An operator is draining the agent.
    Draining,
    /// The leader has no live link to the agent (it has not reconnected since a failover),
    /// so a launch could not reach it, or the link is nearly full (the agent is behind on
    /// its commands): launches go elsewhere until it catches up.
    NotConnected,
    /// Less of `resource` is free than the task needs (amounts in the resource's unit).
    Insufficient {
        resource: Resource,
        needed: u64,
        free: u64,
    },
    /// The fixed ports are outside the agent's ranges or in use, or fewer ports are free
    /// than the task asks for.
    PortsUnavailable { wanted: Vec<u16>, free: usize },
    /// The agent's store does not hold the task's image.
    ImageMissing { image: String },
    /// A placement constraint of the app (`[rack, UNIQUE]`) rules the agent out.
    Constraint { constraint: String },
}

impl fmt::Display for WhyNot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WhyNot::NotActive { state } => write!(f, "agent is {state}"),
            WhyNot::Draining => write!(f, "agent is draining"),
            WhyNot::NotConnected => write!(
                f,
                "agent is not connected to the leader, or is behind on the commands sent to it"
            ),
            WhyNot::Insufficient {
                resource,
                needed,
                free,
            } => write!(
                f,
                "insufficient {}: needs {}, {} free",
                resource.name(),
                resource.show(*needed),
                resource.show(*free)
            ),
            WhyNot::PortsUnavailable { wanted, free } => write!(
                f,
                "ports {wanted:?} unavailable (0 = any; {free} free in the agent's ranges)"
            ),
            WhyNot::ImageMissing { image } => write!(f, "image {image} is not on the agent"),
            WhyNot::Constraint { constraint } => {
                write!(f, "constraint {constraint} is not met by the agent")
            }
        }
    }
}

/// An agent that could not take a task, and every reason why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassedOver {
    pub agent_id: String,
    pub reasons: Vec<WhyNot>,
}

/// Where a task goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub agent_id: String,
    /// One host port per asked port, in the asked order.
    pub ports: Vec<u16>,
}

/// What an agent still has to give while one planning round places tasks.
#[derive(Debug, Clone)]
struct Slot<'a> {
    agent: &'a Agent,
    free: Resources,
    used_ports: BTreeSet<u16>,
    /// Set when the agent takes no task at all this round (not active, draining, no link).
    closed: Option<WhyNot>,
}

/// Every agent of the cluster with what it has free; each placement takes its share, so
/// one round never gives the same capacity twice.
#[derive(Debug, Clone)]
pub struct Pool<'a> {
    slots: BTreeMap<&'a str, Slot<'a>>,
}

impl<'a> Pool<'a> {
    /// The agents of `state`; those for which `connected` is false are closed with
    /// `WhyNot::NotConnected` (the master passes "has a live link to this leader with room
    /// for more commands").
    pub fn new(state: &'a ClusterState, connected: &dyn Fn(&Agent) -> bool) -> Pool<'a> {
        let slots = state
            .agents
            .values()
            .map(|agent| {
                let (held, used_ports) = state.held_on(&agent.id);
                let closed = if agent.state != AgentState::Active {
                    Some(WhyNot::NotActive {
                        state: agent.state.as_str(),
                    })
                } else if state.draining.contains(&agent.id) {
                    Some(WhyNot::Draining)
                } else if !connected(agent) {
                    Some(WhyNot::NotConnected)
                } else {
                    None
                };
                let slot = Slot {
                    agent,
                    free: agent.resources.saturating_sub(&held),
                    used_ports: used_ports.clone(),
                    closed,
                };
                (agent.id.as_str(), slot)
            })
            .collect();
        Pool { slots }
    }

    /// Every reason `agent_id` cannot take the task now (empty: it can).
    pub fn why_not(&self, agent_id: &str, ask: &Ask) -> Vec<WhyNot> {
        match self.slots.get(agent_id) {
            Some(slot) => slot_why_not(slot, ask).err().unwrap_or_default(),
            None => vec![WhyNot::NotActive { state: "gone" }],
        }
    }

    /// Places the task on the agent with the most free memory that can take it (ties go to
    /// the smallest id, so plans are stable) and takes what it uses from the pool; or says,
    /// for every agent, why not. The cheap checks (open, resources, image) come first; host
    /// ports are allocated for the best candidates only, and the reasons are gathered only
    /// when no agent can take the task.
    pub fn place(&mut self, ask: &Ask) -> Result<Placed, Vec<PassedOver>> {
        let open_values = |field: &str| self.open_values(field);
        let mut candidates: Vec<(&str, u64)> = self
            .slots
            .iter()
            .filter(|(_, slot)| cheap_fit(slot, ask))
            .filter(|(_, slot)| unmet_constraint(slot, ask, &open_values).is_none())
            .map(|(id, slot)| (*id, slot.free.mem_mib))
            .collect();
        // Most free memory first, then the smallest id (the map iterates ids in order and
        // the sort is stable).
        candidates.sort_by_key(|(_, mem)| std::cmp::Reverse(*mem));
        let chosen = candidates.iter().find_map(|(id, _)| {
            let slot = &self.slots[id];
            allocate_ports(&slot.agent.ports, &slot.used_ports, ask.ports).map(|p| (*id, p))
        });
        let Some((agent_id, ports)) = chosen else {
            return Err(self
                .slots
                .iter()
                .filter_map(|(id, slot)| {
                    let mut reasons = slot_why_not(slot, ask).err().unwrap_or_default();
                    if let Some(constraint) = unmet_constraint(slot, ask, &open_values) {
                        reasons.push(WhyNot::Constraint { constraint });
                    }
                    if reasons.is_empty() {
                        return None;
                    }
                    Some(PassedOver {
                        agent_id: id.to_string(),
                        reasons,
                    })
                })
                .collect());
        };
        let agent_id = agent_id.to_string();
        let slot = self
            .slots
            .get_mut(agent_id.as_str())
            .expect("chosen from the pool");
        slot.free = slot.free.saturating_sub(&ask.resources);
        slot.used_ports.extend(ports.iter().copied());
        Ok(Placed { agent_id, ports })
    }
}

impl<'a> Pool<'a> {
    /// An agent of the pool.
    pub fn agent(&self, agent_id: &str) -> Option<&'a Agent> {
        self.slots.get(agent_id).map(|slot| slot.agent)
    }

    /// The values of `field` among the open agents (GROUP_BY spreads over them).
    fn open_values(&self, field: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .slots
            .values()
            .filter(|slot| slot.closed.is_none())
            .filter_map(|slot| crate::constraints::value_of(slot.agent, field).map(str::to_string))
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

/// The first of the ask's constraints the agent fails, described.
fn unmet_constraint(
    slot: &Slot,
    ask: &Ask,
    open_values: &dyn Fn(&str) -> Vec<String>,
) -> Option<String> {
    if ask.constraints.is_empty() {
        return None;
    }
    let empty = crate::constraints::Spread::default();
    let spread = ask.spread.unwrap_or(&empty);
    crate::constraints::unmet(ask.constraints, spread, slot.agent, open_values)
        .map(|c| c.describe())
}

/// Whether the agent is open, has the resources and holds the image (everything but ports).
fn cheap_fit(slot: &Slot, ask: &Ask) -> bool {
    slot.closed.is_none()
        && ask.resources.fits_in(&slot.free)
        && ask
            .image
            .is_none_or(|image| slot.agent.images.contains(image))
}

/// The ports the agent would give, or every reason it cannot take the task.
fn slot_why_not(slot: &Slot, ask: &Ask) -> Result<Vec<u16>, Vec<WhyNot>> {
    let mut reasons: Vec<WhyNot> = slot.closed.iter().cloned().collect();
    for resource in Resource::ALL {
        let (needed, free) = (resource.of(&ask.resources), resource.of(&slot.free));
        if needed > free {
            reasons.push(WhyNot::Insufficient {
                resource,
                needed,
                free,
            });
        }
    }
    let ports = allocate_ports(&slot.agent.ports, &slot.used_ports, ask.ports);
    if ports.is_none() {
        let free = slot
            .agent
            .ports
            .iter()
            .flat_map(|r| r.begin..=r.end)
            .filter(|p| !slot.used_ports.contains(p))
            .take(ask.ports.len() + 1)
            .count();
        reasons.push(WhyNot::PortsUnavailable {
            wanted: ask.ports.to_vec(),
            free,
        });
    }
    if let Some(image) = ask.image {
        if !slot.agent.images.contains(image) {
            reasons.push(WhyNot::ImageMissing {
                image: image.to_string(),
            });
        }
    }
    match (reasons.is_empty(), ports) {
        (true, Some(ports)) => Ok(ports),
        _ => Err(reasons),
    }
}

/// Chooses host ports for a task: each `wanted` entry is a fixed port (must be in `ranges`
/// and unused) or 0 (the lowest free port). `None` if they cannot all be had.
pub fn allocate_ports(
    ranges: &[PortRange],
    used: &BTreeSet<u16>,
    wanted: &[u16],
) -> Option<Vec<u16>> {
    let mut taken = used.clone();
    let mut chosen = vec![0u16; wanted.len()];
    for (i, port) in wanted.iter().enumerate().filter(|(_, p)| **p != 0) {
        if !ranges.iter().any(|r| r.contains(*port)) || !taken.insert(*port) {
            return None;
        }
        chosen[i] = *port;
    }
    for (i, _) in wanted.iter().enumerate().filter(|(_, p)| **p == 0) {
        let port = ranges
            .iter()
            .flat_map(|r| r.begin..=r.end)
            .find(|p| !taken.contains(p))?;
        taken.insert(port);
        chosen[i] = port;
    }
    Some(chosen)
}

/// Why a task could never run on this cluster as it is, whatever else runs: checked when a
/// definition is submitted, against every active agent's whole capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// Asks for more of `resource` than the largest active agent has in all.
    TooLarge { resource: Resource, largest: u64 },
    /// The fixed port at `index` of the asked ports is in no active agent's ranges.
    PortOutsideRanges {
        index: usize,
        port: u16,
        ranges: Vec<PortRange>,
    },
    /// No active agent holds the image.
    ImageNowhere { image: String },
}

/// Every reason `ask` can never be placed (empty: some agent could take it once free).
/// A cluster without active agents fits everything: the task waits for agents to join.
pub fn unfit(state: &ClusterState, ask: &Ask) -> Vec<Unfit> {
    let active: Vec<&Agent> = state
        .agents
        .values()
        .filter(|a| a.state == AgentState::Active)
        .collect();
    if active.is_empty() {
        return Vec::new();
    }
    let mut unfit = Vec::new();
    for resource in Resource::ALL {
        let largest = active
            .iter()
            .map(|a| resource.of(&a.resources))
            .max()
            .unwrap_or(0);
        if resource.of(&ask.resources) > largest {
            unfit.push(Unfit::TooLarge { resource, largest });
        }
    }
    let ranges: Vec<PortRange> = active
        .iter()
        .flat_map(|a| a.ports.iter().copied())
        .collect();
    if !ranges.is_empty() {
        for (index, port) in ask.ports.iter().enumerate() {
            if *port != 0 && !ranges.iter().any(|r| r.contains(*port)) {
                unfit.push(Unfit::PortOutsideRanges {
                    index,
                    port: *port,
                    ranges: ranges.clone(),
                });
            }
        }
    }
    if let Some(image) = ask.image {
        if !active.iter().any(|a| a.images.contains(image)) {
            unfit.push(Unfit::ImageNowhere {
                image: image.to_string(),
            });
        }
    }
    unfit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::state::tests::{agent, app, task};

    fn ask(cpus_milli: u64, mem_mib: u64, ports: &[u16]) -> Ask<'_> {
        Ask {
            resources: Resources {
                cpus_milli,
                mem_mib,
                disk_mib: 0,
            },
            ports,
            image: None,
            constraints: &[],
            spread: None,
        }
    }

    #[test]
    fn ports_are_allocated_lowest_first_around_fixed_and_used_ones() {
        let ranges = [
            PortRange {
                begin: 100,
                end: 103,
            },
            PortRange {
                begin: 200,
                end: 200,
            },
        ];
        let used: BTreeSet<u16> = [100].into();
        type Case<'a> = (&'a [u16], Option<Vec<u16>>, &'a str);
        let cases: [Case; 8] = [
            (&[0, 0], Some(vec![101, 102]), "lowest free"),
            (&[0, 101], Some(vec![102, 101]), "fixed first"),
            (&[200, 0, 0, 0], Some(vec![200, 101, 102, 103]), "all"),
            (&[0, 0, 0, 0, 0], None, "only 4 free"),
            (&[100], None, "fixed port in use"),
            (&[150], None, "fixed port outside the ranges"),
            (&[101, 101], None, "the same port twice"),
            (&[], Some(vec![]), "none asked"),
        ];
        for (wanted, expected, why) in cases {
            assert_eq!(allocate_ports(&ranges, &used, wanted), expected, "{why}");
        }
    }

    /// a1 is small, a2 big but draining, a3 unreachable, a4 not connected, a5 holds the
    /// only free port and the image but little memory.
    fn cluster() -> ClusterState {
        let mut s = ClusterState::default();
        for (id, cpus, mem) in [
            ("a1", 1000, 128),
            ("a2", 8000, 8192),
            ("a3", 8000, 8192),
            ("a4", 8000, 8192),
            ("a5", 4000, 256),
        ] {
            let mut a = agent(id, cpus, mem);
            if id == "a5" {
                a.images.insert("docker.io/library/busybox:latest".into());
            }
            s.apply(&Command::RegisterAgent { agent: a });
        }
        s.apply(&Command::DrainAgent {
            agent_id: "a2".into(),
        });
        s.apply(&Command::MarkAgentUnreachable {
            agent_id: "a3".into(),
            at_ms: 1,
        });
        s.apply(&Command::PutApp {
            app: app("/web", 1),
            create: true,
            at_ms: 1,
            deployment_id: "d".into(),
        });
        let mut t = task("t1", "/web", "a1", 1);
        t.ports = (31000..=31009).collect();
        s.apply(&Command::LaunchTask { task: t });
        s
    }

    fn reasons(passed_over: &[PassedOver], agent_id: &str) -> Vec<WhyNot> {
        passed_over
            .iter()
            .find(|p| p.agent_id == agent_id)
            .map(|p| p.reasons.clone())
            .unwrap_or_else(|| panic!("{agent_id} not passed over: {passed_over:?}"))
    }

    #[test]
    fn every_agent_passed_over_says_why() {
        let s = cluster();
        let connected = |a: &Agent| a.id != "a4";
        let mut pool = Pool::new(&s, &connected);
        let image = "docker.io/library/ubuntu:24.04";
        let big = Ask {
            image: Some(image),
            ..ask(2000, 512, &[0])
        };
        let passed_over = pool.place(&big).unwrap_err();
        assert_eq!(passed_over.len(), 5);
        assert_eq!(
            reasons(&passed_over, "a1"),
            vec![
                WhyNot::Insufficient {
                    resource: Resource::Cpus,
                    needed: 2000,
                    free: 500
                },
                WhyNot::Insufficient {
                    resource: Resource::Mem,
                    needed: 512,
                    free: 64
                },
                WhyNot::PortsUnavailable {
                    wanted: vec![0],
                    free: 0
                },
                WhyNot::ImageMissing {
                    image: image.into()
                },
            ]
        );
        assert_eq!(reasons(&passed_over, "a2")[0], WhyNot::Draining);
        assert_eq!(
            reasons(&passed_over, "a3")[0],
            WhyNot::NotActive {
                state: "unreachable"
            }
        );
        assert_eq!(reasons(&passed_over, "a4")[0], WhyNot::NotConnected);
        assert_eq!(
            reasons(&passed_over, "a5"),
            vec![
                WhyNot::Insufficient {
                    resource: Resource::Mem,
                    needed: 512,
                    free: 256
                },
                WhyNot::ImageMissing {
                    image: image.into()
                }
            ]
        );
        let mut disk = ask(0, 0, &[]);
        disk.resources.disk_mib = 5000;
        assert_eq!(
            pool.why_not("a5", &disk),
            vec![WhyNot::Insufficient {
                resource: Resource::Disk,
                needed: 5000,
                free: 1000
            }]
        );
        assert_eq!(
            pool.why_not("nobody", &disk),
            vec![WhyNot::NotActive { state: "gone" }]
        );
        // Reasons read as sentences.
        assert_eq!(
            reasons(&passed_over, "a1")[1].to_string(),
            "insufficient mem: needs 512 MiB, 64 MiB free"
        );
    }

    #[test]
    fn a_placement_takes_its_share_from_the_pool() {
        let s = cluster();
        let mut pool = Pool::new(&s, &|_| true);
        let image = "docker.io/library/busybox:latest";
        let small = Ask {
            image: Some(image),
            ..ask(1000, 100, &[0])
        };
        let placed = pool.place(&small).unwrap();
        assert_eq!(
            placed,
            Placed {
                agent_id: "a5".into(),
                ports: vec![31000]
            }
        );
        // The second fits a5's cpus and ports, not its memory any more.
        let again = pool.place(&Ask {
            resources: Resources {
                cpus_milli: 1000,
                mem_mib: 200,
                disk_mib: 0,
            },
            ..small
        });
        let passed_over = again.unwrap_err();
        assert_eq!(
            reasons(&passed_over, "a5"),
            vec![WhyNot::Insufficient {
                resource: Resource::Mem,
                needed: 200,
                free: 156
            }]
        );
        // Without an image and ports, the freest open agent wins: a4 (connected here).
        assert_eq!(pool.place(&ask(100, 10, &[])).unwrap().agent_id, "a4");
    }

    #[test]
    fn equal_free_memory_goes_to_the_smallest_id() {
        let mut s = ClusterState::default();
        for id in ["c", "a", "b"] {
            s.apply(&Command::RegisterAgent {
                agent: agent(id, 1000, 512),
            });
        }
        let mut pool = Pool::new(&s, &|_| true);
        let placed: Vec<String> = (0..4)
            .map(|_| pool.place(&ask(100, 128, &[])).unwrap().agent_id)
            .collect();
        assert_eq!(placed, ["a", "b", "c", "a"]);
    }

    #[test]
    fn a_definition_that_fits_no_agent_ever_is_named_unfit() {
        let s = cluster();
        let image = "docker.io/library/ubuntu:24.04";
        let mut huge = Ask {
            image: Some(image),
            ..ask(9000, 100, &[0, 31005, 40000])
        };
        huge.resources.disk_mib = 2000;
        assert_eq!(
            unfit(&s, &huge),
            vec![
                Unfit::TooLarge {
                    resource: Resource::Cpus,
                    largest: 8000
                },
                Unfit::TooLarge {
                    resource: Resource::Disk,
                    largest: 1000
                },
                Unfit::PortOutsideRanges {
                    index: 2,
                    port: 40000,
                    ranges: vec![
                        PortRange {
                            begin: 31000,
                            end: 31009
                        };
                        4
                    ]
                },
                Unfit::ImageNowhere {
                    image: image.into()
                },
            ]
        );
        assert!(unfit(&s, &ask(8000, 8192, &[31009])).is_empty());
        assert!(unfit(&ClusterState::default(), &huge).is_empty());
    }
}
