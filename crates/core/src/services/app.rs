//! Marathon-style app definitions (`/v2/apps`) and their validation.
//!
//! Validation is pure: it checks the definition on its own. Checks that need the cluster
//! (does any agent have room, does the image exist) live with their callers.

use super::fields::{
    self, Fetch, HealthCheck, ReadinessCheck, UnreachableStrategy, UpgradeStrategy,
};
use crate::types::{
    default_protocol, LaunchSpec, PortMapping, Resources, TaskNetworkMode, VolumeSpec,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest number of instances one app may ask for; a typo like 1000000 is refused.
pub const INSTANCES_MAX: u32 = 10_000;
/// Longest kill grace period a task may ask for.
pub const KILL_GRACE_PERIOD_MAX_S: u64 = 3_600;
const ID_MAX_LEN: usize = 200;

/// An app id in Marathon's absolute form: `/group/name`.
pub type AppId = String;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// JSON path of the offending field, e.g. `cpus` or `container.docker.image`.
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSpec {
    pub id: AppId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    #[serde(default = "default_mem")]
    pub mem: f64,
    #[serde(default)]
    pub disk: f64,
    #[serde(default = "default_instances")]
    pub instances: u32,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default = "default_grace")]
    pub task_kill_grace_period_seconds: u64,
    /// Host ports each task gets (host networking): `port: 0` is any free port of the
    /// agent's range, another value that exact port. Given to the task as $PORT0.., $PORTS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_definitions: Vec<PortDefinition>,
    /// Marathon's `networks`: none or `[{"mode": "host"}]` shares the agent's network;
    /// `[{"mode": "container/bridge"}]` gives each task its own address on the agent's
    /// bridge, reachable through `container.portMappings`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkSpec>,
    #[serde(default)]
    pub gpus: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Marathon's `[field, operator, value?]` placement constraints.
    #[serde(default)]
    pub constraints: Vec<Vec<String>>,
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    #[serde(default)]
    pub readiness_checks: Vec<ReadinessCheck>,
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,
    #[serde(default)]
    pub unreachable_strategy: UnreachableStrategy,
    /// `YOUNGEST_FIRST` or `OLDEST_FIRST`: which tasks go first when scaling down.
    #[serde(default = "default_kill_selection")]
    pub kill_selection: String,
    /// Relaunch delay after a failure: `backoffSeconds`, times `backoffFactor` for each
    /// further failure in a row, at most `maxLaunchDelaySeconds`.
    #[serde(default = "default_backoff_seconds")]
    pub backoff_seconds: f64,
    #[serde(default = "default_backoff_factor")]
    pub backoff_factor: f64,
    #[serde(default = "default_max_launch_delay")]
    pub max_launch_delay_seconds: f64,
    /// Apps (absolute ids) deployed before this one.
    #[serde(default)]
    pub dependencies: Vec<AppId>,
    #[serde(default)]
    pub fetch: Vec<Fetch>,
    #[serde(default)]
    pub require_ports: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_resource_roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub executor: String,
    /// Kept as given (see `unhonoured`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<serde_json::Value>,
    /// dcos-rs's own, off unless given: a deployment of the app not finished this many
    /// seconds after it began is rolled back to the version before it, once (a rollback
    /// that does not finish either is left to the operator). Accepted in definitions;
    /// Marathon's answers never carry it (`for_marathon`), since its clients' strict models
    /// would refuse the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<u32>,
}

/// Where service ports left at 0 are taken from (Marathon's `local_port_min/max`).
pub const SERVICE_PORTS: std::ops::RangeInclusive<u16> = 10_000..=20_000;

/// Longest `progressDeadlineSeconds`: a week.
pub const PROGRESS_DEADLINE_MAX_SECONDS: u32 = 7 * 86_400;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    #[serde(default = "default_network_mode")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn default_network_mode() -> String {
    "host".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortDefinition {
    #[serde(default)]
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn valid_protocol(protocol: &str) -> bool {
    matches!(protocol, "tcp" | "udp" | "tcp,udp" | "udp,tcp")
}

/// Most host ports one task may ask for.
pub const PORTS_PER_TASK_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    /// `MESOS` or `DOCKER`; both run in dcos-rs's own runtime.
    #[serde(rename = "type", default = "default_container_type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// Runs each task in a user namespace of its own: its root (and every id up to 65535)
    /// is an unprivileged id range of the agent's host. Needs an image.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_namespace: bool,
}

/// Most volumes one app may declare.
pub const VOLUMES_MAX: usize = 32;

/// A path made only of normal segments (no `.`, `..` or empty ones).
fn clean_segments(path: &str) -> bool {
    path.trim_start_matches('/')
        .split('/')
        .all(|s| !s.is_empty() && s != "." && s != "..")
}

fn validate_volumes(
    volumes: &[VolumeSpec],
    mem_mib: f64,
    has_image: bool,
    errors: &mut Vec<FieldError>,
) {
    if volumes.is_empty() {
        return;
    }
    if !has_image {
        errors.push(FieldError::new(
            "container.volumes",
            "volumes need container.docker.image (a task without an image runs in the host's filesystem)",
        ));
    }
    if volumes.len() > VOLUMES_MAX {
        errors.push(FieldError::new(
            "container.volumes",
            format!("at most {VOLUMES_MAX} volumes"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, volume) in volumes.iter().enumerate() {
        let field = |name: &str| format!("container.volumes[{i}].{name}");
        let path = volume.container_path.trim_end_matches('/');
        if !path.starts_with('/') || !clean_segments(path) || path.contains('\0') {
            errors.push(FieldError::new(
                field("containerPath"),
                "must be an absolute path below / without '.' or '..' segments",
            ));
        } else if !seen.insert(path.to_string()) {
            errors.push(FieldError::new(
                field("containerPath"),
                format!("{path} is mounted twice"),
            ));
        }
        if volume.mode != "RO" && volume.mode != "RW" {
            errors.push(FieldError::new(field("mode"), "must be RO or RW"));
        }
        match (&volume.host_path, &volume.tmpfs) {
            (Some(_), Some(_)) | (None, None) => errors.push(FieldError::new(
                field("hostPath"),
                "give either hostPath or tmpfs",
            )),
            (Some(host), None) => {
                if host.is_empty() || !clean_segments(host) || host.contains('\0') {
                    errors.push(FieldError::new(
                        field("hostPath"),
                        "must be an absolute host path or a path relative to the sandbox, without '.' or '..' segments",
                    ));
                }
            }
            (None, Some(tmpfs)) => {
                if tmpfs.size_mib == 0 || tmpfs.size_mib as f64 > mem_mib {
                    errors.push(FieldError::new(
                        field("tmpfs.sizeMiB"),
                        "must be at least 1 and at most the app's mem (tmpfs pages count against it)",
                    ));
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerSpec {
    pub image: String,
}

fn default_cpus() -> f64 {
    1.0
}
fn default_mem() -> f64 {
    128.0
}
fn default_instances() -> u32 {
    1
}
fn default_grace() -> u64 {
    3
}
fn default_kill_selection() -> String {
    "YOUNGEST_FIRST".to_string()
}
fn default_backoff_seconds() -> f64 {
    1.0
}
fn default_backoff_factor() -> f64 {
    1.15
}
fn default_max_launch_delay() -> f64 {
    300.0
}
fn default_container_type() -> String {
    "MESOS".to_string()
}

impl AppSpec {
    /// Normalizes the id (relative ids become absolute, trailing `/` dropped) and checks every
    /// field, returning all problems found rather than the first.
    pub fn normalize_and_validate(&mut self) -> Result<(), Vec<FieldError>> {
        self.id = normalize_app_id(&self.id);
        let mut errors = Vec::new();
        if let Err(reason) = validate_app_id(&self.id) {
            errors.push(FieldError::new("id", reason));
        }
        match (&self.cmd, &self.args) {
            (Some(_), Some(_)) => {
                errors.push(FieldError::new("cmd", "give either cmd or args, not both"))
            }
            (None, None) if self.image().is_none() => errors.push(FieldError::new(
                "cmd",
                "an app needs cmd, args or container.docker.image",
            )),
            (Some(cmd), None) if cmd.trim().is_empty() => {
                errors.push(FieldError::new("cmd", "must not be empty"))
            }
            (None, Some(args)) if args.is_empty() => {
                errors.push(FieldError::new("args", "must not be empty"))
            }
            _ => {}
        }
        if !(self.cpus.is_finite() && self.cpus > 0.0 && self.cpus <= 4096.0) {
            errors.push(FieldError::new("cpus", "must be > 0 and <= 4096"));
        }
        if !(self.mem.is_finite() && self.mem >= 4.0 && self.mem <= 16.0 * 1024.0 * 1024.0) {
            errors.push(FieldError::new(
                "mem",
                "must be at least 4 (MiB) and at most 16 TiB",
            ));
        }
        if !(self.disk.is_finite() && self.disk >= 0.0) {
            errors.push(FieldError::new("disk", "must be >= 0 (MiB)"));
        }
        if self.instances > INSTANCES_MAX {
            errors.push(FieldError::new(
                "instances",
                format!("must be at most {INSTANCES_MAX}"),
            ));
        }
        if self.task_kill_grace_period_seconds > KILL_GRACE_PERIOD_MAX_S {
            errors.push(FieldError::new(
                "taskKillGracePeriodSeconds",
                format!("must be at most {KILL_GRACE_PERIOD_MAX_S}"),
            ));
        }
        let has_nul = |s: &str| s.contains('\0');
        if self.cmd.as_deref().is_some_and(has_nul) {
            errors.push(FieldError::new("cmd", "must not contain NUL"));
        }
        if let Some(i) = self.args.iter().flatten().position(|a| has_nul(a)) {
            errors.push(FieldError::new(
                format!("args[{i}]"),
                "must not contain NUL",
            ));
        }
        for (name, value) in &self.env {
            if has_nul(value) {
                errors.push(FieldError::new(
                    format!("env.{name}"),
                    "values must not contain NUL",
                ));
            }
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                errors.push(FieldError::new(
                    format!("env.{name}"),
                    "variable names must be non-empty and contain no '=' or NUL",
                ));
            }
        }
        if self.port_definitions.len() > PORTS_PER_TASK_MAX {
            errors.push(FieldError::new(
                "portDefinitions",
                format!("at most {PORTS_PER_TASK_MAX} ports per task"),
            ));
        }
        let mut fixed = std::collections::BTreeSet::new();
        for (i, def) in self.port_definitions.iter().enumerate() {
            if def.port != 0 && !fixed.insert(def.port) {
                errors.push(FieldError::new(
                    format!("portDefinitions[{i}].port"),
                    format!("port {} is asked for twice", def.port),
                ));
            }
            if !valid_protocol(&def.protocol) {
                errors.push(FieldError::new(
                    format!("portDefinitions[{i}].protocol"),
                    "must be tcp, udp or tcp,udp",
                ));
            }
        }
        self.validate_networks(&mut errors);
        if let Some(container) = &self.container {
            if container.kind != "MESOS" && container.kind != "DOCKER" {
                errors.push(FieldError::new("container.type", "must be MESOS or DOCKER"));
            }
            if let Some(docker) = &container.docker {
                if docker.image.trim().is_empty() {
                    errors.push(FieldError::new(
                        "container.docker.image",
                        "must not be empty",
                    ));
                }
            }
            validate_volumes(
                &container.volumes,
                self.mem,
                self.image().is_some(),
                &mut errors,
            );
            if container.user_namespace && self.image().is_none() {
                errors.push(FieldError::new(
                    "container.userNamespace",
                    "a user namespace needs container.docker.image (a task without an image runs as a plain process on the host)",
                ));
            }
        }
        self.validate_marathon_fields(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The fields beyond the task itself (`fields`): checks, constraints, strategies.
    fn validate_marathon_fields(&mut self, errors: &mut Vec<FieldError>) {
        if self.gpus > 0 {
            errors.push(FieldError::new(
                "gpus",
                "no dcos-rs agent offers GPUs: the app could never be placed",
            ));
        }
        for (key, value) in &self.labels {
            if key.is_empty() || key.contains('\0') || value.contains('\0') {
                errors.push(FieldError::new(
                    format!("labels.{key}"),
                    "label names must be non-empty; names and values hold no NUL",
                ));
            }
        }
        fields::validate_constraints(&mut self.constraints, errors);
        let ports = self.requested_ports();
        fields::validate_health_checks(&mut self.health_checks, &ports, errors);
        let port_names = self.port_names();
        fields::validate_readiness_checks(&mut self.readiness_checks, &port_names, errors);
        fields::validate_upgrade_strategy(&self.upgrade_strategy, errors);
        fields::validate_unreachable_strategy(&self.unreachable_strategy, errors);
        if self.kill_selection != "YOUNGEST_FIRST" && self.kill_selection != "OLDEST_FIRST" {
            errors.push(FieldError::new(
                "killSelection",
                "must be YOUNGEST_FIRST or OLDEST_FIRST",
            ));
        }
        if !(self.backoff_seconds.is_finite() && (0.0..=86_400.0).contains(&self.backoff_seconds)) {
            errors.push(FieldError::new("backoffSeconds", "must be 0-86400"));
        }
        if !(self.backoff_factor.is_finite() && (1.0..=100.0).contains(&self.backoff_factor)) {
            errors.push(FieldError::new("backoffFactor", "must be 1-100"));
        }
        if !(self.max_launch_delay_seconds.is_finite()
            && (0.0..=86_400.0).contains(&self.max_launch_delay_seconds))
        {
            errors.push(FieldError::new("maxLaunchDelaySeconds", "must be 0-86400"));
        }
        if self.dependencies.len() > fields::LIST_MAX {
            errors.push(FieldError::new(
                "dependencies",
                format!("at most {} dependencies", fields::LIST_MAX),
            ));
        }
        let group = parent_group(&self.id);
        for (i, dependency) in self.dependencies.iter_mut().enumerate() {
            *dependency = resolve_id(&group, dependency);
            if let Err(reason) = validate_app_id(dependency) {
                errors.push(FieldError::new(format!("dependencies[{i}]"), reason));
            } else if *dependency == self.id {
                errors.push(FieldError::new(
                    format!("dependencies[{i}]"),
                    "an app cannot depend on itself",
                ));
            }
        }
        fields::validate_fetch(&self.fetch, errors);
        if let Some(seconds) = self.progress_deadline_seconds {
            if !(1..=PROGRESS_DEADLINE_MAX_SECONDS).contains(&seconds) {
                errors.push(FieldError::new(
                    "progressDeadlineSeconds",
                    format!("must be 1-{PROGRESS_DEADLINE_MAX_SECONDS} (or left out: no deadline)"),
                ));
            }
        }
    }

    /// The definition as Marathon's answers show it: without this system's own fields.
    pub fn for_marathon(&self) -> AppSpec {
        AppSpec {
            progress_deadline_seconds: None,
            ..self.clone()
        }
    }

    /// Fields this system keeps and shows but does not act on yet, one warning each (the API
    /// sends them as `Warning` headers, the CLI prints them).
    pub fn unhonoured(&self) -> Vec<FieldError> {
        let mut kept = Vec::new();
        for i in fields::fetch_not_unpacked(&self.fetch) {
            kept.push(FieldError::new(
                format!("fetch[{i}].extract"),
                format!(
                    "this archive kind ({}) is fetched and kept as it is, not unpacked, by dcos-rs",
                    fields::ARCHIVES_NOT_UNPACKED.join(", ")
                ),
            ));
        }
        let mut keep = |field: &str, present: bool| {
            if present {
                kept.push(FieldError::new(
                    field,
                    "accepted and kept, but not acted on yet by dcos-rs",
                ));
            }
        };
        keep(
            "acceptedResourceRoles",
            self.accepted_resource_roles.is_some(),
        );
        keep("role", self.role.is_some());
        keep("executor", !self.executor.is_empty());
        keep("secrets", !self.secrets.is_empty());
        keep("residency", self.residency.is_some());
        kept
    }

    fn validate_networks(&self, errors: &mut Vec<FieldError>) {
        if self.networks.len() > 1 {
            errors.push(FieldError::new(
                "networks",
                "at most one network (host or container/bridge)",
            ));
        }
        if let Some(network) = self.networks.first() {
            if network.mode != "host" && network.mode != "container/bridge" {
                errors.push(FieldError::new(
                    "networks[0].mode",
                    "must be host or container/bridge",
                ));
            }
            if network.mode == "container/bridge" && self.image().is_none() {
                errors.push(FieldError::new(
                    "networks[0].mode",
                    "container/bridge needs container.docker.image (a task without an image uses the host's network)",
                ));
            }
        }
        let mappings = self.port_mappings();
        if !self.bridged() && !mappings.is_empty() {
            errors.push(FieldError::new(
                "container.portMappings",
                "port mappings need networks [{\"mode\": \"container/bridge\"}]; with the host's network use portDefinitions",
            ));
        }
        if self.bridged() && !self.port_definitions.is_empty() {
            errors.push(FieldError::new(
                "portDefinitions",
                "a container/bridge app gets host ports from container.portMappings",
            ));
        }
        if mappings.len() > PORTS_PER_TASK_MAX {
            errors.push(FieldError::new(
                "container.portMappings",
                format!("at most {PORTS_PER_TASK_MAX} ports per task"),
            ));
        }
        let mut fixed = std::collections::BTreeSet::new();
        for (i, mapping) in mappings.iter().enumerate() {
            let field = |name: &str| format!("container.portMappings[{i}].{name}");
            if mapping.container_port == 0 {
                errors.push(FieldError::new(field("containerPort"), "must be 1-65535"));
            }
            if mapping.host_port != 0 && !fixed.insert(mapping.host_port) {
                errors.push(FieldError::new(
                    field("hostPort"),
                    format!("port {} is asked for twice", mapping.host_port),
                ));
            }
            if !valid_protocol(&mapping.protocol) {
                errors.push(FieldError::new(
                    field("protocol"),
                    "must be tcp, udp or tcp,udp",
                ));
            }
        }
    }

    /// True when tasks get their own address on the agent's bridge.
    pub fn bridged(&self) -> bool {
        self.networks
            .first()
            .is_some_and(|n| n.mode == "container/bridge")
    }

    fn port_mappings(&self) -> &[PortMapping] {
        self.container
            .as_ref()
            .map(|c| c.port_mappings.as_slice())
            .unwrap_or_default()
    }

    /// The names of the task's ports, in the order of `requested_ports`.
    fn port_names(&self) -> Vec<Option<String>> {
        if self.bridged() {
            self.port_mappings()
                .iter()
                .map(|m| m.name.clone())
                .collect()
        } else {
            self.port_definitions
                .iter()
                .map(|d| d.name.clone())
                .collect()
        }
    }

    /// The readiness checks an agent runs for a task given `ports` (its host ports): each
    /// to the host port of the port its `portName` names, on the agent's loopback.
    pub fn task_readiness_checks(&self, ports: &[u16]) -> Vec<crate::types::TaskReadinessCheck> {
        let names = self.port_names();
        self.readiness_checks
            .iter()
            .filter_map(|check| {
                let index = names
                    .iter()
                    .position(|n| n.as_deref() == Some(check.port_name.as_str()))?;
                Some(crate::types::TaskReadinessCheck {
                    name: check.name.clone(),
                    protocol: check.protocol.to_ascii_lowercase(),
                    port: *ports.get(index)?,
                    path: check.path.clone(),
                    interval_seconds: check.interval_seconds,
                    timeout_seconds: check.timeout_seconds,
                    ready_statuses: check.http_status_codes_for_ready.clone(),
                    preserve_last_response: check.preserve_last_response,
                })
            })
            .collect()
    }

    /// Host ports each task asks for, 0 meaning "any": the port mappings' host ports on a
    /// bridge, else the port definitions.
    /// The host ports a task asks for, one per port (0: any free port of the agent's
    /// range). A bridged task asks for its mappings' `hostPort`s; a task on the host's
    /// network for its `portDefinitions[].port` only with `requirePorts` (as in Marathon,
    /// that `port` is otherwise the app's service port, for load balancers).
    pub fn requested_ports(&self) -> Vec<u16> {
        if self.bridged() {
            self.port_mappings().iter().map(|m| m.host_port).collect()
        } else {
            self.port_definitions
                .iter()
                .map(|d| if self.require_ports { d.port } else { 0 })
                .collect()
        }
    }

    /// The app's service ports (Marathon's: `portDefinitions[].port`, or the mappings'
    /// `servicePort` on a bridge), 0 where none is set yet.
    pub fn service_ports(&self) -> Vec<u16> {
        if self.bridged() {
            self.port_mappings()
                .iter()
                .map(|m| m.service_port)
                .collect()
        } else {
            self.port_definitions.iter().map(|d| d.port).collect()
        }
    }

    /// Sets service port `i` (which must exist).
    fn set_service_port(&mut self, i: usize, port: u16) {
        if self.bridged() {
            if let Some(m) = self
                .container
                .as_mut()
                .and_then(|c| c.port_mappings.get_mut(i))
            {
                m.service_port = port;
            }
        } else if let Some(d) = self.port_definitions.get_mut(i) {
            d.port = port;
        }
    }

    /// Gives every service port left at 0 one from Marathon's range (10000-20000) that no
    /// other app uses (`taken`): the one it had in `previous` at the same place if still
    /// free, else the lowest free. `None` when the range is used up. With `requirePorts` on
    /// the host's network the ports are host ports, and 0 stays "any".
    pub fn assign_service_ports(
        &mut self,
        previous: Option<&AppSpec>,
        taken: &std::collections::BTreeSet<u16>,
    ) -> Option<()> {
        if self.require_ports && !self.bridged() {
            return Some(());
        }
        let mut used: std::collections::BTreeSet<u16> = taken.clone();
        used.extend(self.service_ports().into_iter().filter(|p| *p != 0));
        let before = previous.map(AppSpec::service_ports).unwrap_or_default();
        for (i, port) in self.service_ports().into_iter().enumerate() {
            if port != 0 {
                continue;
            }
            let kept = before
                .get(i)
                .copied()
                .filter(|p| *p != 0 && SERVICE_PORTS.contains(p) && !used.contains(p));
            let chosen = kept.or_else(|| SERVICE_PORTS.clone().find(|p| !used.contains(p)))?;
            used.insert(chosen);
            self.set_service_port(i, chosen);
        }
        Some(())
    }

    pub fn image(&self) -> Option<&str> {
        self.container
            .as_ref()
            .and_then(|c| c.docker.as_ref())
            .map(|d| d.image.as_str())
    }

    /// Resources one instance needs, rounded up to whole milli-cpus and MiB.
    pub fn resources(&self) -> Resources {
        Resources::of(self.cpus, self.mem, self.disk)
    }

    pub fn launch_spec(&self) -> LaunchSpec {
        LaunchSpec {
            cmd: self.cmd.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            image: self.image().map(str::to_string),
            user: self.user.clone(),
            kill_grace_period_ms: self.task_kill_grace_period_seconds * 1000,
            volumes: self
                .container
                .as_ref()
                .map(|c| c.volumes.clone())
                .unwrap_or_default(),
            user_namespace: self.container.as_ref().is_some_and(|c| c.user_namespace),
            // Filled by `build_task` once the task's ports are known.
            health_checks: Vec::new(),
            readiness_checks: Vec::new(),
            output_tail_bytes: 0,
            fetch: self
                .fetch
                .iter()
                .map(|f| crate::types::TaskFetch {
                    uri: f.uri.clone(),
                    extract: f.extract,
                    executable: f.executable,
                    cache: f.cache,
                    output_file: f.output_file.clone(),
                })
                .collect(),
            network: if self.bridged() {
                TaskNetworkMode::Bridge {
                    port_mappings: self.port_mappings().to_vec(),
                }
            } else {
                TaskNetworkMode::Host
            },
        }
    }

    /// The health checks an agent runs for a task given `ports` (its host ports): HTTP(S)
    /// and TCP ones (Marathon's and the MESOS_ kinds alike), to the port given or the task's
    /// `portIndex`-th port on the agent's loopback, and COMMAND ones, run beside the task.
    pub fn task_health_checks(&self, ports: &[u16]) -> Vec<crate::types::TaskHealthCheck> {
        self.health_checks
            .iter()
            .filter_map(|check| {
                let protocol = match check.protocol.as_str() {
                    "HTTP" | "MESOS_HTTP" => "http",
                    "HTTPS" | "MESOS_HTTPS" => "https",
                    "TCP" | "MESOS_TCP" => "tcp",
                    "COMMAND" => "command",
                    _ => return None,
                };
                // Only the task's own ports (validation refuses others; this keeps it so for
                // definitions stored before it did).
                let port = match (protocol, check.port, check.port_index) {
                    ("command", _, _) => 0,
                    (_, Some(port), _) if ports.contains(&port) => port,
                    (_, Some(_), _) => return None,
                    (_, None, index) => *ports.get(index.unwrap_or(0) as usize)?,
                };
                Some(crate::types::TaskHealthCheck {
                    protocol: protocol.to_string(),
                    port,
                    command: check.command.as_ref().map(|c| c.value.clone()),
                    path: check.path.clone(),
                    grace_period_seconds: check.grace_period_seconds,
                    interval_seconds: check.interval_seconds,
                    timeout_seconds: check.timeout_seconds,
                    max_consecutive_failures: check.max_consecutive_failures,
                    delay_seconds: check.delay_seconds,
                    ignore_http1xx: check.ignore_http1xx,
                })
            })
            .collect()
    }

    /// True when two definitions differ in anything but `instances`: such a change needs new
    /// tasks, a scale does not.
    /// True when two definitions differ in anything but `instances` (a scale carries only
    /// the count; any other change, the deadline included, is a new definition).
    pub fn differs_beyond_instances(&self, other: &AppSpec) -> bool {
        let mut a = self.clone();
        a.instances = other.instances;
        a != *other
    }

    pub fn config_differs(&self, other: &AppSpec) -> bool {
        let mut a = self.clone();
        a.instances = other.instances;
        // The deadline is about deployments, not tasks: changing it replaces none.
        a.progress_deadline_seconds = other.progress_deadline_seconds;
        a != *other
    }
}

/// The group an app id lives in: `/a/b/web` -> `/a/b`, `/web` -> `/`.
pub fn parent_group(id: &str) -> String {
    match id.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => id[..i].to_string(),
    }
}

/// Marathon's id resolution against a group: absolute ids stay, relative ones (with `..`
/// segments) are taken from `group`.
pub fn resolve_id(group: &str, id: &str) -> String {
    if id.starts_with('/') {
        return normalize_app_id(id);
    }
    let mut segments: Vec<&str> = group.split('/').filter(|s| !s.is_empty()).collect();
    for segment in id.split('/').filter(|s| !s.is_empty()) {
        match segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    format!("/{}", segments.join("/"))
}

/// Prepares an app definition as Marathon's clients send it for `AppSpec`: drops the
/// read-only keys of an app answer sent back in a PUT, turns the legacy `uris` and `ports`
/// into `fetch` and `portDefinitions`, and refuses keys Marathon does not know (they would
/// otherwise vanish without a word) and obsolete ones given a value.
pub fn prepare_app_json(value: &mut serde_json::Value) -> Result<(), Vec<FieldError>> {
    use serde_json::Value;
    let Some(object) = value.as_object_mut() else {
        return Err(vec![FieldError::new(
            "(root)",
            "an app definition must be a JSON object",
        )]);
    };
    for key in fields::READ_ONLY_FIELDS {
        object.remove(*key);
    }
    let mut errors = Vec::new();
    for key in object.keys() {
        if !fields::APP_FIELDS.contains(&key.as_str()) {
            errors.push(FieldError::new(
                key.clone(),
                "unknown field of a Marathon app definition",
            ));
        }
    }
    // Obsolete: accepted only when empty.
    for key in ["ipAddress", "storeUrls", "taskRateLimit"] {
        match object.remove(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) if items.is_empty() => {}
            Some(_) => errors.push(FieldError::new(
                key,
                "an obsolete Marathon field dcos-rs does not support (ipAddress: use networks)",
            )),
        }
    }
    if let Some(uris) = object.remove("uris") {
        let Value::Array(uris) = uris else {
            errors.push(FieldError::new("uris", "must be an array of URIs"));
            return Err(errors);
        };
        if !uris.is_empty() {
            if object
                .get("fetch")
                .is_some_and(|f| f.as_array().is_some_and(|f| !f.is_empty()))
            {
                errors.push(FieldError::new(
                    "uris",
                    "give either uris or fetch, not both",
                ));
            } else {
                let fetch = uris
                    .into_iter()
                    .map(|uri| serde_json::json!({ "uri": uri }))
                    .collect();
                object.insert("fetch".to_string(), Value::Array(fetch));
            }
        }
    }
    if let Some(ports) = object.remove("ports") {
        let has_definitions = object.contains_key("portDefinitions");
        match ports {
            Value::Array(ports) if has_definitions || ports.is_empty() => {}
            Value::Array(ports) => {
                let definitions = ports
                    .into_iter()
                    .map(|port| serde_json::json!({ "port": port }))
                    .collect();
                object.insert("portDefinitions".to_string(), Value::Array(definitions));
            }
            _ => errors.push(FieldError::new("ports", "must be an array of port numbers")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

pub fn normalize_app_id(id: &str) -> String {
    let trimmed = id.trim().trim_end_matches('/');
    if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

/// Marathon's rule: `/`-separated segments of lowercase letters, digits, `-` and `.`, each
/// starting and ending with a letter or digit.
pub fn validate_app_id(id: &str) -> Result<(), String> {
    if id.len() > ID_MAX_LEN {
        return Err(format!("must be at most {ID_MAX_LEN} characters"));
    }
    let path = id.strip_prefix('/').unwrap_or(id);
    if path.is_empty() {
        return Err("must not be empty".to_string());
    }
    for segment in path.split('/') {
        let ok = !segment.is_empty()
            && segment
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && segment
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && segment
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && segment != "."
            && segment != "..";
        if !ok {
            return Err(format!(
                "segment '{segment}' must be lowercase letters, digits, '-' or '.', starting and ending with a letter or digit"
            ));
        }
        if RESERVED_SEGMENTS.contains(&segment) {
            return Err(format!(
                "segment '{segment}' is reserved: /v2/apps/<id>/{segment} is an endpoint of the app"
            ));
        }
    }
    Ok(())
}

/// Words of the app API's paths (`/v2/apps/<id>/tasks`, `.../versions/<v>`, `.../restart`):
/// an app id holding one could not be addressed.
pub const RESERVED_SEGMENTS: &[&str] = &["tasks", "versions", "restart"];

#[cfg(test)]
mod tests {
    use super::*;

    fn app(json: &str) -> AppSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_follow_marathon() {
        let a = app(r#"{"id":"web","cmd":"sleep 1"}"#);
        assert_eq!(a.cpus, 1.0);
        assert_eq!(a.mem, 128.0);
        assert_eq!(a.instances, 1);
        assert_eq!(a.task_kill_grace_period_seconds, 3);
    }

    #[test]
    fn relative_id_becomes_absolute() {
        let mut a = app(r#"{"id":"group/web/","cmd":"true"}"#);
        a.normalize_and_validate().unwrap();
        assert_eq!(a.id, "/group/web");
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = [
            (r#"{"id":"Web","cmd":"x"}"#, "id"),
            (r#"{"id":"/a//b","cmd":"x"}"#, "id"),
            (r#"{"id":"/a/../b","cmd":"x"}"#, "id"),
            (r#"{"id":"w"}"#, "cmd"),
            (r#"{"id":"w","cmd":"x","args":["y"]}"#, "cmd"),
            (r#"{"id":"w","args":[]}"#, "args"),
            (r#"{"id":"w","cmd":"x","cpus":0}"#, "cpus"),
            (r#"{"id":"w","cmd":"x","cpus":-1}"#, "cpus"),
            (r#"{"id":"w","cmd":"x","mem":1}"#, "mem"),
            (r#"{"id":"w","cmd":"x","instances":100000}"#, "instances"),
            (r#"{"id":"w","cmd":"x","env":{"A=B":"c"}}"#, "env.A=B"),
            (
                r#"{"id":"w","container":{"type":"RKT","docker":{"image":"x"}}}"#,
                "container.type",
            ),
            (
                r#"{"id":"w","container":{"docker":{"image":" "}}}"#,
                "container.docker.image",
            ),
            (
                r#"{"id":"w","cmd":"x","container":{"type":"MESOS","userNamespace":true}}"#,
                "container.userNamespace",
            ),
        ];
        for (json, field) in cases {
            let errors = app(json).normalize_and_validate().unwrap_err();
            assert!(
                errors.iter().any(|e| e.field == field),
                "{json}: expected an error on {field}, got {errors:?}"
            );
        }
    }

    #[test]
    fn volumes_are_checked_field_by_field() {
        let base = |volumes: &str| {
            format!(
                r#"{{"id":"v","mem":64,"container":{{"docker":{{"image":"busybox"}},"volumes":{volumes}}}}}"#
            )
        };
        let ok = base(
            r#"[{"containerPath":"/data","hostPath":"/srv/data","mode":"RO"},
                {"containerPath":"/scratch","hostPath":"scratch"},
                {"containerPath":"/cache","tmpfs":{"sizeMiB":16}}]"#,
        );
        let mut spec = app(&ok);
        spec.normalize_and_validate().unwrap();
        assert_eq!(spec.launch_spec().volumes.len(), 3);
        assert!(spec.launch_spec().volumes[0].read_only());
        let cases = [
            (
                r#"[{"containerPath":"data","hostPath":"/x"}]"#,
                "container.volumes[0].containerPath",
            ),
            (
                r#"[{"containerPath":"/a/../etc","hostPath":"/x"}]"#,
                "container.volumes[0].containerPath",
            ),
            (
                r#"[{"containerPath":"/","hostPath":"/x"}]"#,
                "container.volumes[0].containerPath",
            ),
            (
                r#"[{"containerPath":"/a","hostPath":"/x"},{"containerPath":"/a/","hostPath":"/y"}]"#,
                "container.volumes[1].containerPath",
            ),
            (
                r#"[{"containerPath":"/a","hostPath":"../up"}]"#,
                "container.volumes[0].hostPath",
            ),
            (
                r#"[{"containerPath":"/a","hostPath":"/"}]"#,
                "container.volumes[0].hostPath",
            ),
            (
                r#"[{"containerPath":"/a"}]"#,
                "container.volumes[0].hostPath",
            ),
            (
                r#"[{"containerPath":"/a","hostPath":"/x","mode":"rw"}]"#,
                "container.volumes[0].mode",
            ),
            (
                r#"[{"containerPath":"/a","tmpfs":{"sizeMiB":65}}]"#,
                "container.volumes[0].tmpfs.sizeMiB",
            ),
        ];
        for (volumes, field) in cases {
            let errors = app(&base(volumes)).normalize_and_validate().unwrap_err();
            assert!(
                errors.iter().any(|e| e.field == field),
                "{volumes}: expected {field}, got {errors:?}"
            );
        }
        let plain = r#"{"id":"p","cmd":"true","container":{"volumes":[{"containerPath":"/a","hostPath":"/x"}]}}"#;
        let errors = app(plain).normalize_and_validate().unwrap_err();
        assert!(
            errors.iter().any(|e| e.field == "container.volumes"),
            "{errors:?}"
        );
    }

    #[test]
    fn port_definitions_are_checked() {
        let mut ok = app(
            r#"{"id":"p","cmd":"x","portDefinitions":[{"port":0},{"port":8080,"name":"http"}]}"#,
        );
        ok.normalize_and_validate().unwrap();
        assert_eq!(
            ok.requested_ports(),
            vec![0, 0],
            "service ports, any host ports"
        );
        assert_eq!(ok.service_ports(), vec![0, 8080]);
        ok.require_ports = true;
        assert_eq!(ok.requested_ports(), vec![0, 8080]);
        let errors = app(r#"{"id":"p","cmd":"x","portDefinitions":[{"port":80},{"port":80}]}"#)
            .normalize_and_validate()
            .unwrap_err();
        assert_eq!(errors[0].field, "portDefinitions[1].port");
        let errors =
            app(r#"{"id":"p","cmd":"x","portDefinitions":[{"port":0,"protocol":"sctp"}]}"#)
                .normalize_and_validate()
                .unwrap_err();
        assert_eq!(errors[0].field, "portDefinitions[0].protocol");
    }

    #[test]
    fn bridge_networks_and_port_mappings_are_checked() {
        let mut ok = app(r#"{"id":"b","container":{"docker":{"image":"busybox"},
            "portMappings":[{"containerPort":80},{"containerPort":53,"hostPort":31053,"protocol":"udp"}]},
            "networks":[{"mode":"container/bridge"}]}"#);
        ok.normalize_and_validate().unwrap();
        assert!(ok.bridged());
        assert_eq!(ok.requested_ports(), vec![0, 31053]);
        match ok.launch_spec().network {
            TaskNetworkMode::Bridge { port_mappings } => {
                assert_eq!(port_mappings[1].container_port, 53);
                assert_eq!(port_mappings[1].protocol, "udp");
            }
            other => panic!("expected a bridge, got {other:?}"),
        }
        let host = app(r#"{"id":"h","cmd":"x","networks":[{"mode":"host"}]}"#);
        assert_eq!(host.launch_spec().network, TaskNetworkMode::Host);

        let errors_of = |json: &str| {
            app(json)
                .normalize_and_validate()
                .unwrap_err()
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            errors_of(r#"{"id":"b","cmd":"x","networks":[{"mode":"container/bridge"}]}"#),
            vec!["networks[0].mode"],
            "bridge without an image"
        );
        assert_eq!(
            errors_of(r#"{"id":"b","cmd":"x","networks":[{"mode":"overlay"}]}"#),
            vec!["networks[0].mode"]
        );
        assert_eq!(
            errors_of(
                r#"{"id":"b","container":{"docker":{"image":"i"},"portMappings":[{"containerPort":80}]}}"#
            ),
            vec!["container.portMappings"],
            "mappings on the host network"
        );
        let mut fields = errors_of(
            r#"{"id":"b","container":{"docker":{"image":"i"},"portMappings":[
                {"containerPort":0},{"containerPort":1,"hostPort":31000},
                {"containerPort":2,"hostPort":31000,"protocol":"sctp"}]},
                "networks":[{"mode":"container/bridge"}],"portDefinitions":[{"port":0}]}"#,
        );
        fields.sort();
        assert_eq!(
            fields,
            vec![
                "container.portMappings[0].containerPort",
                "container.portMappings[2].hostPort",
                "container.portMappings[2].protocol",
                "portDefinitions",
            ]
        );
    }

    #[test]
    fn image_only_app_is_valid() {
        let mut a = app(r#"{"id":"w","container":{"docker":{"image":"busybox"}}}"#);
        a.normalize_and_validate().unwrap();
        assert_eq!(a.image(), Some("busybox"));
    }

    #[test]
    fn resources_round_up() {
        let a = app(r#"{"id":"w","cmd":"x","cpus":0.0015,"mem":32.2}"#);
        assert_eq!(
            a.resources(),
            Resources {
                cpus_milli: 2,
                mem_mib: 33,
                disk_mib: 0
            }
        );
    }

    #[test]
    fn scale_is_not_a_config_change() {
        let a = app(r#"{"id":"w","cmd":"x"}"#);
        let mut b = a.clone();
        b.instances = 5;
        assert!(!a.config_differs(&b));
        b.cmd = Some("y".into());
        assert!(a.config_differs(&b));
    }

    #[test]
    fn user_namespace_is_opt_in_and_reaches_the_launch() {
        let mut on = app(
            r#"{"id":"u","container":{"type":"MESOS","docker":{"image":"busybox"},"userNamespace":true}}"#,
        );
        on.normalize_and_validate().unwrap();
        assert!(on.launch_spec().user_namespace);
        assert!(serde_json::to_string(&on)
            .unwrap()
            .contains(r#""userNamespace":true"#));
        let mut off = app(r#"{"id":"u","container":{"docker":{"image":"busybox"}}}"#);
        off.normalize_and_validate().unwrap();
        assert!(!off.launch_spec().user_namespace);
        assert!(!serde_json::to_string(&off)
            .unwrap()
            .contains("userNamespace"));
        assert!(on.config_differs(&off), "turning it on replaces the tasks");
    }

    #[test]
    fn an_app_read_back_and_sent_again_is_accepted_and_unknown_keys_are_named() {
        let mut sent = serde_json::json!({
            "id": "web", "cmd": "sleep 1", "uris": ["https://example.com/a.tgz"], "ports": [0, 0],
            "version": "2026-01-01T00:00:00.000Z", "tasks": [], "tasksRunning": 1,
            "deployments": [], "versionInfo": {}, "ipAddress": null
        });
        prepare_app_json(&mut sent).unwrap();
        let mut spec: AppSpec = serde_json::from_value(sent).unwrap();
        spec.normalize_and_validate().unwrap();
        assert_eq!(spec.fetch[0].uri, "https://example.com/a.tgz");
        assert!(spec.fetch[0].extract);
        assert_eq!(spec.port_definitions.len(), 2);
        assert!(spec.unhonoured().is_empty());

        let mut unknown = serde_json::json!({"id": "web", "cmd": "x", "instnaces": 2, "ipAddress": {"networkName": "n"}});
        let errors = prepare_app_json(&mut unknown).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["instnaces", "ipAddress"]);
    }

    #[test]
    fn marathon_defaults_are_filled_and_dependencies_resolve_against_the_group() {
        let mut spec =
            app(r#"{"id":"/shop/web","cmd":"x","dependencies":["db","../infra/dns","/abs"]}"#);
        spec.normalize_and_validate().unwrap();
        assert_eq!(spec.dependencies, vec!["/shop/db", "/infra/dns", "/abs"]);
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json["upgradeStrategy"],
            serde_json::json!({"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0})
        );
        assert_eq!(
            json["unreachableStrategy"],
            serde_json::json!({"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0})
        );
        assert_eq!(json["killSelection"], "YOUNGEST_FIRST");
        assert_eq!(json["backoffFactor"], 1.15);
        assert_eq!(json["labels"], serde_json::json!({}));
        assert_eq!(json["healthChecks"], serde_json::json!([]));
        assert_eq!(spec.unhonoured(), vec![], "dependencies are acted on");

        let mut bad = app(
            r#"{"id":"/w","cmd":"x","gpus":1,"killSelection":"RANDOM","backoffFactor":0.5,"dependencies":["w"]}"#,
        );
        let errors = bad.normalize_and_validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["gpus", "killSelection", "backoffFactor", "dependencies[0]"]
        );
        assert_eq!(resolve_id("/", "a/b"), "/a/b");
        assert_eq!(parent_group("/a/b/c"), "/a/b");
        assert_eq!(parent_group("/c"), "/");
    }
}
