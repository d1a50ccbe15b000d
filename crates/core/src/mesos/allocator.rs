//! The allocator: which framework gets which free resources, as Mesos's hierarchical DRF
//! allocator decides it. Pure and clock-free: the leader feeds it agents, frameworks, what
//! their tasks use, and the time, and asks it for offers whenever something changed
//! (`allocate`); there is no batch interval.
//!
//! - **Roles** have a weight (default 1), an optional guarantee (quota) and an optional
//!   limit. Frameworks belong to one role.
//! - **Quota first**: roles below their guarantee are offered before any other, the least
//!   satisfied first; what the unsatisfied guarantees still need stays out of every other
//!   offer (it is held back cluster-wide, not on a particular agent).
//! - **Then weighted DRF**: the role whose dominant share (its largest fraction of the
//!   cluster's cpus, memory or disk) divided by its weight is smallest goes first, then,
//!   within it, the framework with the smallest dominant share; ties go to the smallest id.
//! - An **offer** is all of one agent's free resources (within the role's limit and the
//!   held-back quota) to one framework; offered resources count as the framework's until it
//!   accepts (what it launched stays its own, the rest is free again) or declines them (with
//!   a filter: no offer of that agent to it for `refuse_ms`), or they are rescinded. Free
//!   resources without both some cpus and some memory (`OFFER_MIN`) are not offered.
//! - A **suppressed** framework gets no offers until it revives (which also drops its
//!   filters). A framework that is removed, and an agent that goes away, take their offers
//!   with them (`rescinded`).
//! - **Built-in frameworks** (services, jobs) are never offered anything: they place their
//!   tasks themselves and the allocator only accounts what they use, so their share counts
//!   in DRF and quota like anyone's, and `admit` tells them whether a task keeps their role
//!   within its limit, leaves the others' guarantees whole and takes nothing offered.

use crate::types::Resources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A role's share of the cluster (operators set it: `FrameworksState::roles`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleConfig {
    /// Relative share in DRF (> 0).
    #[serde(default = "one")]
    pub weight: f64,
    /// What the role is guaranteed (Mesos's quota guarantee).
    #[serde(default)]
    pub guarantee: Resources,
    /// At most this much for the role (`None`: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Resources>,
}

fn one() -> f64 {
    1.0
}

impl Default for RoleConfig {
    fn default() -> Self {
        RoleConfig {
            weight: 1.0,
            guarantee: Resources::default(),
            limit: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub id: String,
    pub framework_id: String,
    pub agent_id: String,
    pub resources: Resources,
}

/// Why the allocator refused a framework's use of resources.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("offer {0} is unknown or was used, declined or rescinded")]
    UnknownOffer(String),
    #[error("offer {offer_id} is not framework {framework_id}'s")]
    NotYourOffer {
        offer_id: String,
        framework_id: String,
    },
    #[error("the launch needs {needed:?} but offer {offer_id} holds {offered:?}")]
    ExceedsOffer {
        offer_id: String,
        needed: Resources,
        offered: Resources,
    },
    #[error("framework {0} is not registered")]
    UnknownFramework(String),
    #[error("role {role} would go over its limit {limit:?}")]
    OverLimit { role: String, limit: Resources },
    #[error("other roles' guarantees need what is left ({held:?} held back)")]
    QuotaHeld { held: Resources },
    #[error("what is free on agent {agent_id} is offered to other frameworks")]
    Offered { agent_id: String },
}

#[derive(Debug, Clone)]
struct FrameworkEntry {
    role: String,
    builtin: bool,
    suppressed: bool,
    /// Agents it declined, until when (ms).
    filters: BTreeMap<String, u64>,
    /// What its tasks use.
    used: Resources,
}

#[derive(Debug, Clone)]
struct AgentEntry {
    total: Resources,
    /// What tasks on it use.
    used: Resources,
    active: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Allocator {
    /// Part of every offer id, unique per allocator (the leader's term), so an offer id
    /// of a former leader is never taken for one of this allocator.
    epoch: String,
    roles: BTreeMap<String, RoleConfig>,
    frameworks: BTreeMap<String, FrameworkEntry>,
    agents: BTreeMap<String, AgentEntry>,
    offers: BTreeMap<String, Offer>,
    /// What outstanding offers hold, by framework and by agent (kept with `offers`).
    offered_to: BTreeMap<String, Resources>,
    offered_on: BTreeMap<String, Resources>,
    next_offer: u64,
}

const DIMENSIONS: usize = 3;

fn dims(r: &Resources) -> [u64; DIMENSIONS] {
    [r.cpus_milli, r.mem_mib, r.disk_mib]
}

fn min(a: &Resources, b: &Resources) -> Resources {
    Resources {
        cpus_milli: a.cpus_milli.min(b.cpus_milli),
        mem_mib: a.mem_mib.min(b.mem_mib),
        disk_mib: a.disk_mib.min(b.disk_mib),
    }
}

fn is_empty(r: &Resources) -> bool {
    r.cpus_milli == 0 && r.mem_mib == 0
}

/// The least an offer holds: some cpus and some memory, as every task needs both. Smaller
/// remainders are not offered (Mesos's `min_allocatable_resources`), so an offer of memory
/// without cpus cannot hold an agent's memory while its cpus go to another framework in
/// slivers nobody can use.
pub const OFFER_MIN: Resources = Resources {
    cpus_milli: 10,
    mem_mib: 32,
    disk_mib: 0,
};

fn too_small(r: &Resources) -> bool {
    r.cpus_milli < OFFER_MIN.cpus_milli || r.mem_mib < OFFER_MIN.mem_mib
}

impl Allocator {
    /// An allocator whose offer ids begin with `epoch` (e.g. the leader's term).
    pub fn new(epoch: &str) -> Allocator {
        Allocator {
            epoch: epoch.to_string(),
            ..Allocator::default()
        }
    }

    /// A role's weight, guarantee and limit (roles not set have the defaults).
    pub fn set_role(&mut self, role: &str, config: RoleConfig) {
        self.roles.insert(role.to_string(), config);
    }

    /// Every role's settings at once: roles not in `roles` go back to the defaults.
    pub fn set_roles(&mut self, roles: &BTreeMap<String, RoleConfig>) {
        if &self.roles != roles {
            self.roles = roles.clone();
        }
    }

    fn role(&self, role: &str) -> RoleConfig {
        self.roles.get(role).cloned().unwrap_or_default()
    }

    pub fn add_framework(&mut self, id: &str, role: &str, builtin: bool) {
        self.frameworks
            .entry(id.to_string())
            .or_insert_with(|| FrameworkEntry {
                role: role.to_string(),
                builtin,
                suppressed: false,
                filters: BTreeMap::new(),
                used: Resources::default(),
            });
    }

    /// The framework is gone: its offers go with it (returned, to be rescinded). What its
    /// tasks use is released by the caller as they end (`release`).
    pub fn remove_framework(&mut self, id: &str) -> Vec<Offer> {
        self.frameworks.remove(id);
        self.take_offers(|offer| offer.framework_id == id)
    }

    pub fn add_agent(&mut self, id: &str, total: Resources) {
        let entry = self.agents.entry(id.to_string()).or_insert(AgentEntry {
            total,
            used: Resources::default(),
            active: true,
        });
        entry.total = total;
        entry.active = true;
    }

    /// The agent is lost, draining or removed: nothing of it is offered any more, and its
    /// outstanding offers are returned to be rescinded.
    pub fn deactivate_agent(&mut self, id: &str) -> Vec<Offer> {
        if let Some(agent) = self.agents.get_mut(id) {
            agent.active = false;
        }
        self.take_offers(|offer| offer.agent_id == id)
    }

    fn take_offers(&mut self, which: impl Fn(&Offer) -> bool) -> Vec<Offer> {
        let ids: Vec<String> = self
            .offers
            .values()
            .filter(|o| which(o))
            .map(|o| o.id.clone())
            .collect();
        ids.iter().filter_map(|id| self.remove_offer(id)).collect()
    }

    fn insert_offer(&mut self, offer: Offer) {
        let add = |map: &mut BTreeMap<String, Resources>, key: &str| {
            let held = map.entry(key.to_string()).or_default();
            *held = held.add(&offer.resources);
        };
        add(&mut self.offered_to, &offer.framework_id);
        add(&mut self.offered_on, &offer.agent_id);
        self.offers.insert(offer.id.clone(), offer);
    }

    fn remove_offer(&mut self, id: &str) -> Option<Offer> {
        let offer = self.offers.remove(id)?;
        let sub = |map: &mut BTreeMap<String, Resources>, key: &str| {
            if let Some(held) = map.get_mut(key) {
                *held = held.saturating_sub(&offer.resources);
            }
        };
        sub(&mut self.offered_to, &offer.framework_id);
        sub(&mut self.offered_on, &offer.agent_id);
        Some(offer)
    }

    /// A task of `framework_id` uses `resources` on `agent_id` (a launch from an offer is
    /// `accept`; this is for built-in frameworks and for tasks found at recovery).
    pub fn use_resources(&mut self, framework_id: &str, agent_id: &str, resources: &Resources) {
        if let Some(framework) = self.frameworks.get_mut(framework_id) {
            framework.used = framework.used.add(resources);
        }
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.used = agent.used.add(resources);
        }
    }

    /// A task ended: what it used is free again.
    pub fn release(&mut self, framework_id: &str, agent_id: &str, resources: &Resources) {
        if let Some(framework) = self.frameworks.get_mut(framework_id) {
            framework.used = framework.used.saturating_sub(resources);
        }
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.used = agent.used.saturating_sub(resources);
        }
    }

    /// Offer `offer_id`, outstanding and `framework_id`'s.
    fn own_offer(&self, framework_id: &str, offer_id: &str) -> Result<&Offer, AllocError> {
        let offer = self
            .offers
            .get(offer_id)
            .ok_or_else(|| AllocError::UnknownOffer(offer_id.to_string()))?;
        if offer.framework_id != framework_id {
            return Err(AllocError::NotYourOffer {
                offer_id: offer_id.to_string(),
                framework_id: framework_id.to_string(),
            });
        }
        Ok(offer)
    }

    /// The framework launched `used` of offer `offer_id`: that is its own now, the rest of
    /// the offer is free again.
    pub fn accept(
        &mut self,
        framework_id: &str,
        offer_id: &str,
        used: &Resources,
    ) -> Result<(), AllocError> {
        let offer = self.own_offer(framework_id, offer_id)?;
        if !used.fits_in(&offer.resources) {
            return Err(AllocError::ExceedsOffer {
                offer_id: offer_id.to_string(),
                needed: *used,
                offered: offer.resources,
            });
        }
        let offer = self.remove_offer(offer_id).expect("looked up above");
        self.use_resources(framework_id, &offer.agent_id, used);
        Ok(())
    }

    /// The framework declines the offer: free again, and not offered to it from that agent
    /// for `refuse_ms` (Mesos's `refuse_seconds`, 5 s by default).
    pub fn decline(
        &mut self,
        framework_id: &str,
        offer_id: &str,
        refuse_ms: u64,
        now_ms: u64,
    ) -> Result<(), AllocError> {
        self.own_offer(framework_id, offer_id)?;
        let offer = self.remove_offer(offer_id).expect("looked up above");
        if let Some(framework) = self.frameworks.get_mut(framework_id) {
            if refuse_ms > 0 {
                framework
                    .filters
                    .insert(offer.agent_id, now_ms.saturating_add(refuse_ms));
            }
        }
        Ok(())
    }

    /// No offers until `revive`; its outstanding offers are returned to be rescinded.
    pub fn suppress(&mut self, framework_id: &str) -> Vec<Offer> {
        if let Some(framework) = self.frameworks.get_mut(framework_id) {
            framework.suppressed = true;
        }
        self.take_offers(|offer| offer.framework_id == framework_id)
    }

    /// Offers again, and its filters are dropped.
    pub fn revive(&mut self, framework_id: &str) {
        if let Some(framework) = self.frameworks.get_mut(framework_id) {
            framework.suppressed = false;
            framework.filters.clear();
        }
    }

    /// Every active agent's resources.
    fn cluster_total(&self) -> Resources {
        self.agents
            .values()
            .filter(|a| a.active)
            .fold(Resources::default(), |sum, a| sum.add(&a.total))
    }

    fn offered_on(&self, agent_id: &str) -> Resources {
        self.offered_on.get(agent_id).copied().unwrap_or_default()
    }

    /// What a framework holds: its tasks and its outstanding offers.
    fn held_by_framework(&self, framework_id: &str) -> Resources {
        let offered = self
            .offered_to
            .get(framework_id)
            .copied()
            .unwrap_or_default();
        self.frameworks
            .get(framework_id)
            .map_or(offered, |f| f.used.add(&offered))
    }

    /// What a role holds: its frameworks' tasks and outstanding offers.
    pub fn held_by_role(&self, role: &str) -> Resources {
        self.frameworks
            .iter()
            .filter(|(_, f)| f.role == role)
            .fold(Resources::default(), |sum, (id, _)| {
                sum.add(&self.held_by_framework(id))
            })
    }

    /// The largest fraction of the cluster `held` is (0 to 1).
    fn dominant_share(held: &Resources, total: &Resources) -> f64 {
        dims(held)
            .iter()
            .zip(dims(total))
            .filter(|(_, t)| *t > 0)
            .map(|(h, t)| *h as f64 / t as f64)
            .fold(0.0, f64::max)
    }

    /// A role's dominant share divided by its weight.
    pub fn weighted_share(&self, role: &str) -> f64 {
        self.weighted_share_in(role, &self.cluster_total())
    }

    fn weighted_share_in(&self, role: &str, total: &Resources) -> f64 {
        let weight = self.role(role).weight.max(f64::MIN_POSITIVE);
        Self::dominant_share(&self.held_by_role(role), total) / weight
    }

    /// What roles below their guarantee still need, together, except `except`'s.
    fn quota_held_back(&self, except: Option<&str>) -> Resources {
        let roles: std::collections::BTreeSet<&str> = self
            .roles
            .keys()
            .map(String::as_str)
            .filter(|r| Some(*r) != except)
            .collect();
        roles.iter().fold(Resources::default(), |sum, role| {
            let wanting = self
                .role(role)
                .guarantee
                .saturating_sub(&self.held_by_role(role));
            sum.add(&wanting)
        })
    }

    /// What all active agents have free (not used by tasks nor offered).
    fn cluster_free(&self) -> Resources {
        self.agents
            .iter()
            .filter(|(_, a)| a.active)
            .fold(Resources::default(), |sum, (id, a)| {
                sum.add(
                    &a.total
                        .saturating_sub(&a.used)
                        .saturating_sub(&self.offered_on(id)),
                )
            })
    }

    /// What `role` may still take under its limit.
    fn limit_headroom(&self, role: &str) -> Option<Resources> {
        let limit = self.role(role).limit?;
        Some(limit.saturating_sub(&self.held_by_role(role)))
    }

    /// Whether a built-in framework's task of `resources` on `agent_id` keeps its role
    /// within its limit, leaves what other roles' guarantees still need, and takes nothing
    /// offered to another framework. Admitted, it counts as the framework's at once
    /// (`use_resources`), so the next task of the same round sees it.
    pub fn admit(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        resources: &Resources,
    ) -> Result<(), AllocError> {
        self.may_use(framework_id, resources)?;
        if let Some(agent) = self.agents.get(agent_id) {
            let free = agent
                .total
                .saturating_sub(&agent.used)
                .saturating_sub(&self.offered_on(agent_id));
            if !resources.fits_in(&free) {
                return Err(AllocError::Offered {
                    agent_id: agent_id.to_string(),
                });
            }
        }
        self.use_resources(framework_id, agent_id, resources);
        Ok(())
    }

    /// Whether a built-in framework's task of `resources` keeps its role within its limit
    /// and leaves what other roles' guarantees still need.
    pub fn may_use(&self, framework_id: &str, resources: &Resources) -> Result<(), AllocError> {
        let framework = self
            .frameworks
            .get(framework_id)
            .ok_or_else(|| AllocError::UnknownFramework(framework_id.to_string()))?;
        if let (Some(headroom), Some(limit)) = (
            self.limit_headroom(&framework.role),
            self.role(&framework.role).limit,
        ) {
            if !resources.fits_in(&headroom) {
                return Err(AllocError::OverLimit {
                    role: framework.role.clone(),
                    limit,
                });
            }
        }
        let held = self.quota_held_back(Some(&framework.role));
        let left = self.cluster_free().saturating_sub(resources);
        if !held.fits_in(&left) {
            return Err(AllocError::QuotaHeld { held });
        }
        Ok(())
    }

    /// Offers for what is free now: each active agent's free resources to one framework,
    /// quota first, then weighted DRF. Filters past `now_ms` are dropped first.
    pub fn allocate(&mut self, now_ms: u64) -> Vec<Offer> {
        for framework in self.frameworks.values_mut() {
            framework.filters.retain(|_, until| *until > now_ms);
        }
        let agent_ids: Vec<String> = self
            .agents
            .iter()
            .filter(|(_, a)| a.active)
            .map(|(id, _)| id.clone())
            .collect();
        // The cluster's size, and what is free in all, once per call (each offer takes its
        // part of the latter).
        let total = self.cluster_total();
        let mut free_total = self.cluster_free();
        let mut made = Vec::new();
        for agent_id in agent_ids {
            let agent = &self.agents[&agent_id];
            let free = agent
                .total
                .saturating_sub(&agent.used)
                .saturating_sub(&self.offered_on(&agent_id));
            if too_small(&free) {
                continue;
            }
            let Some((framework_id, resources)) =
                self.choose(&agent_id, &free, &total, &free_total)
            else {
                continue;
            };
            free_total = free_total.saturating_sub(&resources);
            self.next_offer += 1;
            let offer = Offer {
                id: format!("{}o{}", self.epoch, self.next_offer),
                framework_id,
                agent_id: agent_id.clone(),
                resources,
            };
            self.insert_offer(offer.clone());
            made.push(offer);
        }
        made
    }

    /// Who gets `free` of `agent_id`, and how much of it, in a cluster of `total` with
    /// `free_total` free in all.
    fn choose(
        &self,
        agent_id: &str,
        free: &Resources,
        total: &Resources,
        free_total: &Resources,
    ) -> Option<(String, Resources)> {
        // Frameworks that may be offered this agent now, by role.
        let mut by_role: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (id, framework) in &self.frameworks {
            if framework.builtin || framework.suppressed || framework.filters.contains_key(agent_id)
            {
                continue;
            }
            by_role.entry(framework.role.as_str()).or_default().push(id);
        }
        let capped = |role: &str, amount: Resources| -> Option<Resources> {
            let amount = match self.limit_headroom(role) {
                Some(headroom) => min(&amount, &headroom),
                None => amount,
            };
            (!too_small(&amount)).then_some(amount)
        };
        let pick_framework = |role: &str| -> Option<String> {
            by_role
                .get(role)?
                .iter()
                .copied()
                .min_by(|a, b| {
                    let share = |id: &str| Self::dominant_share(&self.held_by_framework(id), total);
                    share(a).total_cmp(&share(b)).then(a.cmp(b))
                })
                .map(str::to_string)
        };
        // Quota: roles below their guarantee, the least satisfied first.
        let mut wanting: Vec<(&str, f64)> = by_role
            .keys()
            .copied()
            .filter_map(|role| {
                let guarantee = self.role(role).guarantee;
                let held = self.held_by_role(role);
                let short = guarantee.saturating_sub(&held);
                (!is_empty(&short)).then(|| (role, Self::dominant_share(&held, &guarantee)))
            })
            .collect();
        wanting.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)));
        for (role, _) in wanting {
            // Up to what it still lacks where it lacks something (other resources as
            // free), leaving what the other guarantees lack.
            let lacking = self
                .role(role)
                .guarantee
                .saturating_sub(&self.held_by_role(role));
            let bound = |l: u64| if l == 0 { u64::MAX } else { l };
            let short = Resources {
                cpus_milli: bound(lacking.cpus_milli),
                mem_mib: bound(lacking.mem_mib),
                disk_mib: bound(lacking.disk_mib),
            };
            let spare = free_total.saturating_sub(&self.quota_held_back(Some(role)));
            let amount = min(&min(free, &short), &spare);
            if too_small(&amount) {
                continue;
            }
            if let (Some(framework), Some(amount)) = (pick_framework(role), capped(role, amount)) {
                return Some((framework, amount));
            }
        }
        // Weighted DRF, leaving what unsatisfied guarantees still need.
        let spare = free_total.saturating_sub(&self.quota_held_back(None));
        let available = min(free, &spare);
        if too_small(&available) {
            return None;
        }
        let mut roles: Vec<(&str, f64)> = by_role
            .keys()
            .map(|role| (*role, self.weighted_share_in(role, total)))
            .collect();
        roles.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)));
        roles
            .into_iter()
            .find_map(|(role, _)| Some((pick_framework(role)?, capped(role, available)?)))
    }

    pub fn offers(&self) -> impl Iterator<Item = &Offer> {
        self.offers.values()
    }

    /// Offer `offer_id` if it is outstanding and `framework_id`'s.
    pub fn offer(&self, framework_id: &str, offer_id: &str) -> Result<&Offer, AllocError> {
        self.own_offer(framework_id, offer_id)
    }

    /// No offer of `agent_id` to `framework_id` for `refuse_ms` (what it left of an
    /// accepted offer, as Mesos filters it).
    pub fn refuse(&mut self, framework_id: &str, agent_id: &str, refuse_ms: u64, now_ms: u64) {
        if let Some(framework) = self.frameworks.get_mut(framework_id) {
            if refuse_ms > 0 {
                framework
                    .filters
                    .insert(agent_id.to_string(), now_ms.saturating_add(refuse_ms));
            }
        }
    }

    /// Brings agents and usage to what the state says: `agents` (id, total, whether it may
    /// be offered) are all there are (the others go), `used` is what each framework's
    /// tasks use on each agent. Returns the offers of agents that went or may no longer be
    /// offered (to be rescinded). Frameworks are added and removed by the caller.
    pub fn sync(
        &mut self,
        agents: &[(String, Resources, bool)],
        used: &[(String, String, Resources)],
    ) -> Vec<Offer> {
        let listed: BTreeMap<&str, (&Resources, bool)> = agents
            .iter()
            .map(|(id, total, active)| (id.as_str(), (total, *active)))
            .collect();
        let mut rescinded = Vec::new();
        let gone: Vec<String> = self
            .agents
            .keys()
            .filter(|id| listed.get(id.as_str()).is_none_or(|(_, active)| !active))
            .cloned()
            .collect();
        for id in gone {
            rescinded.extend(self.deactivate_agent(&id));
            if !listed.contains_key(id.as_str()) {
                self.agents.remove(&id);
            }
        }
        for (id, total, active) in agents {
            if *active {
                self.add_agent(id, *total);
            } else if let Some(agent) = self.agents.get_mut(id) {
                agent.total = *total;
            } else {
                self.agents.insert(
                    id.clone(),
                    AgentEntry {
                        total: *total,
                        used: Resources::default(),
                        active: false,
                    },
                );
            }
        }
        for framework in self.frameworks.values_mut() {
            framework.used = Resources::default();
        }
        for agent in self.agents.values_mut() {
            agent.used = Resources::default();
        }
        for (framework_id, agent_id, resources) in used {
            self.use_resources(framework_id, agent_id, resources);
        }
        rescinded
    }

    /// Frameworks known, with whether each is built in.
    pub fn frameworks(&self) -> impl Iterator<Item = (&str, bool)> {
        self.frameworks
            .iter()
            .map(|(id, f)| (id.as_str(), f.builtin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpus: u64, mem: u64) -> Resources {
        Resources {
            cpus_milli: cpus * 1000,
            mem_mib: mem,
            disk_mib: 0,
        }
    }

    fn cluster(agents: usize, cpus: u64, mem: u64) -> Allocator {
        let mut a = Allocator::default();
        for i in 0..agents {
            a.add_agent(&format!("a{i:03}"), res(cpus, mem));
        }
        a
    }

    /// Frameworks that want tasks of `task` size without end: from each offer each
    /// launches as many as fit (the rest is free again at once), or declines one it cannot
    /// use. Rounds until no offer is made; returns each framework's tasks.
    fn run_tasks(a: &mut Allocator, tasks: &BTreeMap<&str, Resources>) -> BTreeMap<String, u64> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for round in 0..10_000u64 {
            let offers = a.allocate(round);
            if offers.is_empty() {
                break;
            }
            for offer in offers {
                let task = tasks[offer.framework_id.as_str()];
                let mut used = Resources::default();
                let mut n = 0;
                while task.add(&used).fits_in(&offer.resources) {
                    used = used.add(&task);
                    n += 1;
                }
                check_sums(a);
                if n > 0 {
                    a.accept(&offer.framework_id, &offer.id, &used).unwrap();
                    *counts.entry(offer.framework_id.clone()).or_default() += n;
                } else {
                    a.decline(&offer.framework_id, &offer.id, 1_000_000, round)
                        .unwrap();
                }
            }
        }
        counts
    }

    #[test]
    fn drf_shares_converge_to_the_weights_for_two_and_three_frameworks() {
        // Two roles, weights 1 and 3, same task shape: 1:3 of the cluster.
        let mut a = cluster(40, 4, 4_096);
        a.set_role(
            "a",
            RoleConfig {
                weight: 1.0,
                ..Default::default()
            },
        );
        a.set_role(
            "b",
            RoleConfig {
                weight: 3.0,
                ..Default::default()
            },
        );
        a.add_framework("fa", "a", false);
        a.add_framework("fb", "b", false);
        let tasks = BTreeMap::from([("fa", res(1, 256)), ("fb", res(1, 256))]);
        let counts = run_tasks(&mut a, &tasks);
        assert_eq!(
            counts["fa"] + counts["fb"],
            160,
            "the cluster is full: {counts:?}"
        );
        assert!((39..=41).contains(&counts["fa"]), "{counts:?}");
        // Three frameworks, one role each, weights 1, 1, 2, different dominant resources:
        // each of them fills an agent to the same dominant share (2 %), and the weighted
        // shares end within an agent of each other.
        let mut a = cluster(50, 8, 8_192);
        for (role, weight) in [("x", 1.0), ("y", 1.0), ("z", 2.0)] {
            a.set_role(
                role,
                RoleConfig {
                    weight,
                    ..Default::default()
                },
            );
            a.add_framework(&format!("f{role}"), role, false);
        }
        let tasks = BTreeMap::from([
            ("fx", res(2, 128)),   // cpu-heavy
            ("fy", res(1, 2_048)), // memory-heavy
            ("fz", res(1, 512)),
        ]);
        let counts = run_tasks(&mut a, &tasks);
        let agents = counts["fx"] / 4 + counts["fy"] / 4 + counts["fz"] / 8;
        assert_eq!(agents, 50, "every agent went to one of them: {counts:?}");
        let shares: Vec<f64> = ["x", "y", "z"]
            .iter()
            .map(|r| a.weighted_share(r))
            .collect();
        let (lo, hi) = (
            shares.iter().cloned().fold(f64::MAX, f64::min),
            shares.iter().cloned().fold(0.0, f64::max),
        );
        assert!(
            hi - lo < 0.05,
            "weighted dominant shares converge: {shares:?}"
        );
    }

    #[test]
    fn quota_is_honoured_under_contention_and_held_back_from_others() {
        let mut a = cluster(20, 4, 4_096); // 80 cpus
        a.set_role(
            "batch",
            RoleConfig {
                weight: 10.0,
                ..Default::default()
            },
        );
        a.set_role(
            "prod",
            RoleConfig {
                guarantee: res(30, 1_024),
                ..Default::default()
            },
        );
        a.add_framework("big", "batch", false);
        a.add_framework("small", "prod", false);
        // The heavy-weight role starts alone and takes what it can: the guarantee stays.
        let tasks = BTreeMap::from([("big", res(1, 64)), ("small", res(1, 64))]);
        a.suppress("small");
        let counts = run_tasks(&mut a, &tasks);
        assert_eq!(
            counts["big"], 50,
            "80 cpus less the 30 held for prod: {counts:?}"
        );
        a.revive("small");
        let counts = run_tasks(&mut a, &tasks);
        assert_eq!(counts["small"], 30, "{counts:?}");
        assert!(a.held_by_role("prod").cpus_milli >= 30_000);
        // A built-in framework of batch may not take what prod's guarantee needs either.
        let mut b = cluster(4, 4, 4_096);
        b.set_role(
            "prod",
            RoleConfig {
                guarantee: res(8, 0),
                ..Default::default()
            },
        );
        b.add_framework("services", "*", true);
        b.use_resources("services", "a000", &res(4, 64));
        b.use_resources("services", "a001", &res(4, 64));
        assert_eq!(
            b.may_use("services", &res(1, 64)),
            Err(AllocError::QuotaHeld { held: res(8, 0) })
        );
        // Without the guarantee: admitted until what is free (and not offered) runs out.
        b.set_roles(&BTreeMap::new());
        b.add_framework("ext", "*", false);
        let offer = b.allocate(0);
        assert_eq!(offer.len(), 2, "the two free agents are offered: {offer:?}");
        assert_eq!(
            b.admit("services", "a002", &res(1, 64)),
            Err(AllocError::Offered {
                agent_id: "a002".into()
            })
        );
        b.decline("ext", &offer[0].id, 60_000, 0).unwrap();
        b.decline("ext", &offer[1].id, 60_000, 0).unwrap();
        for _ in 0..4 {
            assert_eq!(b.admit("services", "a002", &res(1, 64)), Ok(()));
        }
        assert!(
            b.admit("services", "a002", &res(1, 64)).is_err(),
            "a002 is full"
        );
        assert_eq!(b.held_by_role("*"), res(12, 64 * 6));
    }

    #[test]
    fn one_guaranteed_role_does_not_take_what_anothers_guarantee_needs() {
        let mut a = Allocator::new("t1-");
        for i in 0..10 {
            a.add_agent(&format!("a{i:03}"), res(4, 4_096)); // 40 cpus
        }
        for role in ["p1", "p2"] {
            a.set_role(
                role,
                RoleConfig {
                    guarantee: res(20, 0),
                    ..Default::default()
                },
            );
            a.add_framework(role, role, false);
        }
        let tasks = BTreeMap::from([("p1", res(1, 64)), ("p2", res(1, 64))]);
        a.suppress("p2");
        let counts = run_tasks(&mut a, &tasks);
        assert_eq!(counts["p1"], 20, "{counts:?}");
        a.revive("p2");
        let counts = run_tasks(&mut a, &tasks);
        assert_eq!(counts["p2"], 20, "{counts:?}");
        assert!(a.offers().all(|o| o.id.starts_with("t1-")));
    }

    /// The per-framework and per-agent sums match the outstanding offers.
    fn check_sums(a: &Allocator) {
        for (map, key) in [(&a.offered_to, 0), (&a.offered_on, 1)] {
            for (id, held) in map {
                let sum = a
                    .offers
                    .values()
                    .filter(|o| [&o.framework_id, &o.agent_id][key] == id)
                    .fold(Resources::default(), |s, o| s.add(&o.resources));
                assert_eq!(*held, sum, "{id}");
            }
        }
    }

    #[test]
    fn a_declined_agent_is_not_offered_again_until_the_filter_expires() {
        let mut a = cluster(1, 4, 4_096);
        a.add_framework("f", "*", false);
        let offer = a.allocate(0).pop().unwrap();
        a.decline("f", &offer.id, 5_000, 0).unwrap();
        assert!(a.allocate(4_999).is_empty());
        assert_eq!(
            a.allocate(5_000).len(),
            1,
            "filtered until 5 s after the decline"
        );
        // A second framework is offered what the first declined.
        let mut a = cluster(1, 4, 4_096);
        a.add_framework("f", "*", false);
        a.add_framework("g", "*", false);
        let first = a.allocate(0).pop().unwrap();
        assert_eq!(first.framework_id, "f");
        a.decline("f", &first.id, 5_000, 0).unwrap();
        assert_eq!(a.allocate(1).pop().unwrap().framework_id, "g");
    }

    #[test]
    fn a_thousand_agents_are_shared_evenly_between_ten_frameworks_in_one_call() {
        let mut a = cluster(1_000, 8, 16_384);
        for i in 0..10 {
            a.add_framework(&format!("f{i}"), "*", false);
        }
        let offers = a.allocate(0);
        assert_eq!(offers.len(), 1_000);
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for offer in &offers {
            *per.entry(offer.framework_id.as_str()).or_default() += 1;
        }
        assert!(per.values().all(|n| *n == 100), "{per:?}");
        assert!(a.allocate(1).is_empty(), "nothing left to offer");
    }

    #[test]
    fn suppressed_frameworks_get_nothing_until_they_revive() {
        let mut a = cluster(3, 4, 4_096);
        a.add_framework("f", "*", false);
        let offers = a.allocate(0);
        assert_eq!(offers.len(), 3);
        let rescinded = a.suppress("f");
        assert_eq!(rescinded.len(), 3, "its offers are rescinded");
        assert!(a.allocate(1).is_empty());
        a.revive("f");
        assert_eq!(a.allocate(2).len(), 3);
    }

    #[test]
    fn an_agents_offers_are_rescinded_when_it_goes_and_used_offers_are_refused() {
        let mut a = cluster(2, 4, 4_096);
        a.add_framework("f", "*", false);
        let offers = a.allocate(0);
        let on_a0 = offers
            .iter()
            .find(|o| o.agent_id == "a000")
            .unwrap()
            .clone();
        let rescinded = a.deactivate_agent("a000");
        assert_eq!(rescinded, vec![on_a0.clone()]);
        assert_eq!(
            a.accept("f", &on_a0.id, &res(1, 64)),
            Err(AllocError::UnknownOffer(on_a0.id.clone()))
        );
        let other = offers.iter().find(|o| o.agent_id == "a001").unwrap();
        assert!(matches!(
            a.accept("f", &other.id, &res(5, 64)),
            Err(AllocError::ExceedsOffer { .. })
        ));
        assert!(matches!(
            a.accept("g", &other.id, &res(1, 64)),
            Err(AllocError::NotYourOffer { .. })
        ));
        a.accept("f", &other.id, &res(1, 64)).unwrap();
        // The rest of a001 is offered again; a000 no more.
        let again = a.allocate(1);
        assert_eq!(again.len(), 1);
        assert_eq!(
            (again[0].agent_id.as_str(), again[0].resources),
            ("a001", res(3, 4_032))
        );
        // A removed framework's offers go with it.
        assert_eq!(a.remove_framework("f"), again);
    }

    #[test]
    fn built_in_frameworks_are_never_offered_but_their_share_counts() {
        let mut a = cluster(10, 4, 4_096);
        a.add_framework("services", "*", true);
        a.add_framework("spark", "*", false);
        a.add_framework("other", "analytics", false);
        // The services framework runs 20 cpus in role `*`: `*` has the larger share, so
        // `analytics` is offered first.
        for i in 0..5 {
            a.use_resources("services", &format!("a{i:03}"), &res(4, 256));
        }
        let offers = a.allocate(0);
        assert!(offers.iter().all(|o| o.framework_id != "services"));
        assert_eq!(offers[0].framework_id, "other", "{offers:?}");
        // Limits bound a role's offers.
        let mut b = cluster(2, 4, 4_096);
        b.set_role(
            "capped",
            RoleConfig {
                limit: Some(res(2, 1_024)),
                ..Default::default()
            },
        );
        b.add_framework("c", "capped", false);
        let offers = b.allocate(0);
        assert_eq!(offers.len(), 1, "{offers:?}");
        assert_eq!(offers[0].resources, res(2, 1_024));
        assert!(matches!(
            b.may_use("c", &res(1, 1)),
            Err(AllocError::OverLimit { .. })
        ));
    }

    #[test]
    fn sync_takes_the_states_agents_and_usage_and_rescinds_what_went() {
        let mut a = Allocator::new("e1-");
        a.add_framework("f1", "*", false);
        a.add_framework("builtin", "*", true);
        let agents = vec![
            ("a1".to_string(), res(4, 4096), true),
            ("a2".to_string(), res(4, 4096), true),
        ];
        let used = vec![("builtin".to_string(), "a1".to_string(), res(3, 1024))];
        assert!(a.sync(&agents, &used).is_empty());
        let offers = a.allocate(0);
        let on = |id: &str| offers.iter().find(|o| o.agent_id == id).unwrap().resources;
        // What the built-in framework's tasks use is not offered.
        assert_eq!(on("a1"), res(1, 3072));
        assert_eq!(on("a2"), res(4, 4096));
        assert!(offers.iter().all(|o| o.id.starts_with("e1-")));
        // a2 is drained (not offerable) and a1 removed: both offers are rescinded.
        let agents = vec![("a2".to_string(), res(4, 4096), false)];
        let mut rescinded: Vec<String> = a
            .sync(&agents, &[])
            .into_iter()
            .map(|o| o.agent_id)
            .collect();
        rescinded.sort();
        assert_eq!(rescinded, vec!["a1".to_string(), "a2".to_string()]);
        assert!(a.allocate(1).is_empty());
        // Back: offered again, all of it.
        let agents = vec![("a2".to_string(), res(4, 4096), true)];
        a.sync(&agents, &[]);
        assert_eq!(a.allocate(2)[0].resources, res(4, 4096));
        // What is left of an accepted offer is filtered for its framework.
        let offer = a.offers().next().unwrap().clone();
        a.accept("f1", &offer.id, &res(1, 512)).unwrap();
        a.refuse("f1", "a2", 1_000, 2);
        assert!(a.allocate(500).is_empty());
        a.sync(
            &agents,
            &[("f1".to_string(), "a2".to_string(), res(1, 512))],
        );
        assert_eq!(a.allocate(1_002)[0].resources, res(3, 3584));
    }

    #[test]
    fn memory_without_cpus_is_not_offered() {
        let mut a = cluster(1, 1, 1_000);
        a.add_framework("f1", "*", false);
        a.add_framework("f2", "*", false);
        // f1 takes every cpu and half the memory: what is left has no cpus.
        let offer = a.allocate(0).pop().unwrap();
        a.accept(&offer.framework_id, &offer.id, &res(1, 500))
            .unwrap();
        assert!(a.allocate(0).is_empty(), "500 MiB without cpus is no offer");
        // A task ends: its cpus and memory go to the framework of the smaller share.
        a.release("f1", "a000", &res(1, 0));
        let offers = a.allocate(0);
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].framework_id, "f2");
        assert_eq!(offers[0].resources, res(1, 500));
    }
}
