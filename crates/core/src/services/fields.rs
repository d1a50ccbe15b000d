//! The parts of a Marathon app definition beyond what a task is made of: health and
//! readiness checks, placement constraints, upgrade, unreachable and kill strategies, launch
//! backoff, artifacts to fetch. Each has Marathon's defaults, so a definition read back shows
//! what Marathon would show, and is validated with the field named in every error.
//!
//! Acted on: upgradeStrategy and killSelection (`planner::rolling_step`,
//! `planner::sort_for_killing`), the backoff (`planner::backoff_ms`). The others are kept
//! and reported as warnings at submission (`AppSpec::unhonoured`).

use super::app::FieldError;
use serde::{Deserialize, Serialize};

/// Marathon's app fields, as its API accepts them on input. A key outside these and
/// `READ_ONLY_FIELDS` is refused (it would otherwise be dropped without a word).
pub const APP_FIELDS: &[&str] = &[
    "id",
    "cmd",
    "args",
    "cpus",
    "mem",
    "disk",
    "gpus",
    "instances",
    "env",
    "labels",
    "container",
    "user",
    "taskKillGracePeriodSeconds",
    "portDefinitions",
    "ports",
    "requirePorts",
    "networks",
    "constraints",
    "healthChecks",
    "readinessChecks",
    "upgradeStrategy",
    "unreachableStrategy",
    "killSelection",
    "backoffSeconds",
    "backoffFactor",
    "maxLaunchDelaySeconds",
    "dependencies",
    "fetch",
    "uris",
    "acceptedResourceRoles",
    "role",
    "executor",
    "secrets",
    "storeUrls",
    "residency",
    "taskRateLimit",
    "ipAddress",
    // dcos-rs's own (`AppSpec::progress_deadline_seconds`), never in Marathon's answers.
    "progressDeadlineSeconds",
];

/// Keys of Marathon's app *answers* that clients send back in a PUT of what they read
/// (marathon-python's `update_app` does): ignored on input.
pub const READ_ONLY_FIELDS: &[&str] = &[
    "version",
    "versionInfo",
    "tasks",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
];

/// Most health checks, readiness checks, constraints, dependencies or fetch items per app.
pub const LIST_MAX: usize = 32;

/// One of Marathon's health checks, with its defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default = "default_health_protocol")]
    pub protocol: String,
    /// HTTP(S) only; defaults to `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Which of the task's ports (`portIndex`) or which port (`port`) to check; the
    /// default, for checks that need one, is index 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// COMMAND only: `{"value": "<shell command>"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandCheck>,
    #[serde(default = "default_grace_period")]
    pub grace_period_seconds: u32,
    #[serde(default = "default_interval")]
    pub interval_seconds: u32,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    #[serde(default = "default_max_failures")]
    pub max_consecutive_failures: u32,
    #[serde(default = "default_delay")]
    pub delay_seconds: u32,
    #[serde(default)]
    pub ignore_http1xx: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandCheck {
    pub value: String,
}

fn default_health_protocol() -> String {
    "HTTP".to_string()
}
fn default_grace_period() -> u32 {
    300
}
fn default_interval() -> u32 {
    60
}
fn default_timeout() -> u32 {
    20
}
fn default_max_failures() -> u32 {
    3
}
fn default_delay() -> u32 {
    15
}

/// Longest COMMAND check taken (it travels in the check's arguments).
pub const COMMAND_CHECK_MAX_BYTES: usize = 16 * 1024;

const HEALTH_PROTOCOLS: &[&str] = &[
    "HTTP",
    "HTTPS",
    "TCP",
    "COMMAND",
    "MESOS_HTTP",
    "MESOS_HTTPS",
    "MESOS_TCP",
];

impl HealthCheck {
    fn is_http(&self) -> bool {
        matches!(
            self.protocol.as_str(),
            "HTTP" | "HTTPS" | "MESOS_HTTP" | "MESOS_HTTPS"
        )
    }

    fn normalize_and_validate(
        &mut self,
        field: &str,
        ports: usize,
        fixed_ports: &[u16],
        errors: &mut Vec<FieldError>,
    ) {
        self.protocol = self.protocol.to_ascii_uppercase();
        let at = |name: &str| format!("{field}.{name}");
        if !HEALTH_PROTOCOLS.contains(&self.protocol.as_str()) {
            errors.push(FieldError::new(
                at("protocol"),
                format!("must be one of {}", HEALTH_PROTOCOLS.join(", ")),
            ));
            return;
        }
        if self.protocol == "COMMAND" {
            match &self.command {
                Some(command) if command.value.contains('\0') => {
                    errors.push(FieldError::new(at("command.value"), "must not contain NUL"))
                }
                Some(command) if command.value.len() > COMMAND_CHECK_MAX_BYTES => {
                    errors.push(FieldError::new(
                        at("command.value"),
                        format!("at most {COMMAND_CHECK_MAX_BYTES} bytes"),
                    ))
                }
                Some(command) if !command.value.trim().is_empty() => {}
                _ => errors.push(FieldError::new(
                    at("command.value"),
                    "a COMMAND check needs the command to run",
                )),
            }
            if self.port.is_some() || self.port_index.is_some() {
                errors.push(FieldError::new(
                    at("portIndex"),
                    "a COMMAND check takes no port",
                ));
            }
        } else {
            if self.command.is_some() {
                errors.push(FieldError::new(
                    at("command"),
                    "only a COMMAND check runs a command",
                ));
            }
            match (self.port, self.port_index) {
                (Some(_), Some(_)) => errors.push(FieldError::new(
                    at("port"),
                    "give either port or portIndex, not both",
                )),
                (Some(port), None) if port == 0 || !fixed_ports.contains(&port) => {
                    errors.push(FieldError::new(
                        at("port"),
                        "must be one of the app's fixed host ports, given with requirePorts (portIndex names the task's own ports; the agent probes no other)",
                    ))
                }
                (Some(_), None) => {}
                (None, index) => {
                    let index = index.unwrap_or(0);
                    if index as usize >= ports {
                        errors.push(FieldError::new(
                            at("portIndex"),
                            format!(
                                "the app has {ports} port(s): give portDefinitions or container.portMappings, or a port"
                            ),
                        ));
                    }
                    self.port_index = Some(index);
                }
            }
        }
        if self.is_http() {
            let path = self.path.get_or_insert_with(|| "/".to_string());
            if !path.starts_with('/') || path.chars().any(char::is_control) {
                errors.push(FieldError::new(
                    at("path"),
                    "must start with / and hold no control characters",
                ));
            }
        } else if self.path.is_some() {
            errors.push(FieldError::new(
                at("path"),
                "only HTTP and HTTPS checks take a path",
            ));
        }
        if self.interval_seconds == 0 || self.interval_seconds > 3_600 {
            errors.push(FieldError::new(at("intervalSeconds"), "must be 1-3600"));
        }
        if self.timeout_seconds == 0 || self.timeout_seconds > self.interval_seconds {
            errors.push(FieldError::new(
                at("timeoutSeconds"),
                "must be at least 1 and at most intervalSeconds",
            ));
        }
        if self.grace_period_seconds > 86_400 {
            errors.push(FieldError::new(
                at("gracePeriodSeconds"),
                "must be at most 86400",
            ));
        }
        if self.delay_seconds > 3_600 {
            errors.push(FieldError::new(at("delaySeconds"), "must be at most 3600"));
        }
    }
}

/// Marathon's readiness check: run by the agent on a new task until it passes; the task
/// counts towards a deployment only once ready (`planner::ready`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadinessCheck {
    #[serde(default = "default_readiness_name")]
    pub name: String,
    #[serde(default = "default_readiness_protocol")]
    pub protocol: String,
    #[serde(default = "default_readiness_path")]
    pub path: String,
    #[serde(default = "default_readiness_port_name")]
    pub port_name: String,
    #[serde(default = "default_readiness_interval")]
    pub interval_seconds: u32,
    #[serde(default = "default_readiness_timeout")]
    pub timeout_seconds: u32,
    #[serde(default = "default_ready_codes")]
    pub http_status_codes_for_ready: Vec<u16>,
    #[serde(default)]
    pub preserve_last_response: bool,
}

fn default_readiness_name() -> String {
    "readinessCheck".to_string()
}
fn default_readiness_protocol() -> String {
    "HTTP".to_string()
}
fn default_readiness_path() -> String {
    "/".to_string()
}
fn default_readiness_port_name() -> String {
    "http-api".to_string()
}
fn default_readiness_interval() -> u32 {
    30
}
fn default_readiness_timeout() -> u32 {
    10
}
fn default_ready_codes() -> Vec<u16> {
    vec![200]
}

/// How a rolling change may dip below and go above `instances` (fractions of it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpgradeStrategy {
    #[serde(default = "one")]
    pub minimum_health_capacity: f64,
    #[serde(default = "one")]
    pub maximum_over_capacity: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

/// When a task on an unreachable agent is replaced (`inactiveAfterSeconds`) and when it is
/// forgotten (`expungeAfterSeconds`). Marathon also takes the string `"disabled"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UnreachableStrategy {
    Enabled {
        #[serde(rename = "inactiveAfterSeconds", default)]
        inactive_after_seconds: u64,
        #[serde(rename = "expungeAfterSeconds", default)]
        expunge_after_seconds: u64,
    },
    Disabled(Disabled),
}

/// The literal `"disabled"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Disabled {
    #[serde(rename = "disabled")]
    Disabled,
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        UnreachableStrategy::Enabled {
            inactive_after_seconds: 0,
            expunge_after_seconds: 0,
        }
    }
}

/// An artifact fetched into the sandbox before the task starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fetch {
    pub uri: String,
    #[serde(default = "yes")]
    pub extract: bool,
    #[serde(default)]
    pub executable: bool,
    #[serde(default)]
    pub cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_file: Option<String>,
}

fn yes() -> bool {
    true
}

/// Constraint operators Marathon knows, and whether each needs a value.
const OPERATORS: &[(&str, ValueRule)] = &[
    ("UNIQUE", ValueRule::None),
    ("CLUSTER", ValueRule::Optional),
    ("GROUP_BY", ValueRule::OptionalCount),
    ("LIKE", ValueRule::Required),
    ("UNLIKE", ValueRule::Required),
    ("MAX_PER", ValueRule::Count),
    ("IS", ValueRule::Required),
];

#[derive(Clone, Copy)]
enum ValueRule {
    None,
    Optional,
    OptionalCount,
    Required,
    Count,
}

/// Checks Marathon's `[field, operator, value?]` constraints, upper-casing operators.
pub(crate) fn validate_constraints(constraints: &mut [Vec<String>], errors: &mut Vec<FieldError>) {
    if constraints.len() > LIST_MAX {
        errors.push(FieldError::new(
            "constraints",
            format!("at most {LIST_MAX} constraints"),
        ));
    }
    for (i, constraint) in constraints.iter_mut().enumerate() {
        let at = format!("constraints[{i}]");
        if !(2..=3).contains(&constraint.len()) {
            errors.push(FieldError::new(
                at,
                "must be [field, operator] or [field, operator, value]",
            ));
            continue;
        }
        if constraint[0].trim().is_empty() {
            errors.push(FieldError::new(
                format!("{at}[0]"),
                "the field must not be empty (hostname or an agent attribute)",
            ));
        }
        constraint[1] = constraint[1].to_ascii_uppercase();
        let Some((_, rule)) = OPERATORS.iter().find(|(name, _)| *name == constraint[1]) else {
            let known: Vec<&str> = OPERATORS.iter().map(|(name, _)| *name).collect();
            errors.push(FieldError::new(
                format!("{at}[1]"),
                format!(
                    "unknown operator {}; one of {}",
                    constraint[1],
                    known.join(", ")
                ),
            ));
            continue;
        };
        let value = constraint.get(2);
        let count = |v: &String| v.parse::<u32>().is_ok_and(|n| n >= 1);
        let problem = match (rule, value) {
            (ValueRule::None, Some(_)) => Some("takes no value"),
            (ValueRule::Required, None) | (ValueRule::Count, None) => Some("needs a value"),
            (ValueRule::Count, Some(v)) | (ValueRule::OptionalCount, Some(v)) if !count(v) => {
                Some("the value must be a whole number of at least 1")
            }
            _ => None,
        };
        let regex_ok = !matches!(constraint[1].as_str(), "LIKE" | "UNLIKE")
            || value.is_none_or(|v| crate::constraints::anchored(v).is_some());
        let problem = problem.or((!regex_ok).then_some("the value must be a regular expression"));
        if let Some(problem) = problem {
            errors.push(FieldError::new(
                format!("{at}[2]"),
                format!("{} {problem}", constraint[1]),
            ));
        }
    }
}

pub(crate) fn validate_health_checks(
    checks: &mut [HealthCheck],
    requested_ports: &[u16],
    errors: &mut Vec<FieldError>,
) {
    let ports = requested_ports.len();
    let fixed_ports: Vec<u16> = requested_ports
        .iter()
        .copied()
        .filter(|p| *p != 0)
        .collect();
    if checks.len() > LIST_MAX {
        errors.push(FieldError::new(
            "healthChecks",
            format!("at most {LIST_MAX} health checks"),
        ));
    }
    for (i, check) in checks.iter_mut().enumerate() {
        check.normalize_and_validate(&format!("healthChecks[{i}]"), ports, &fixed_ports, errors);
    }
}

/// Marathon's rules for `readinessChecks`: at most one, HTTP or HTTPS, to a named port of
/// the app, answering within its interval. Normalizes the protocol to upper case.
pub(crate) fn validate_readiness_checks(
    checks: &mut [ReadinessCheck],
    port_names: &[Option<String>],
    errors: &mut Vec<FieldError>,
) {
    if checks.len() > 1 {
        errors.push(FieldError::new(
            "readinessChecks",
            "at most one readiness check per app (as Marathon)",
        ));
    }
    for (i, check) in checks.iter_mut().enumerate() {
        let at = |name: &str| format!("readinessChecks[{i}].{name}");
        check.protocol = check.protocol.to_ascii_uppercase();
        if check.protocol != "HTTP" && check.protocol != "HTTPS" {
            errors.push(FieldError::new(at("protocol"), "must be HTTP or HTTPS"));
        }
        if check.name.is_empty() {
            errors.push(FieldError::new(at("name"), "must not be empty"));
        }
        if !check.path.starts_with('/') || check.path.chars().any(char::is_control) {
            errors.push(FieldError::new(
                at("path"),
                "must start with / and hold no control characters",
            ));
        }
        if !port_names
            .iter()
            .any(|n| n.as_deref() == Some(check.port_name.as_str()))
        {
            let named: Vec<&str> = port_names.iter().filter_map(|n| n.as_deref()).collect();
            errors.push(FieldError::new(
                at("portName"),
                if named.is_empty() {
                    "names no port of the app: give a port definition or port mapping this name"
                        .to_string()
                } else {
                    format!(
                        "names no port of the app (named ports: {})",
                        named.join(", ")
                    )
                },
            ));
        }
        if check.interval_seconds == 0 || check.interval_seconds > 3_600 {
            errors.push(FieldError::new(at("intervalSeconds"), "must be 1-3600"));
        }
        if check.timeout_seconds == 0 || check.timeout_seconds >= check.interval_seconds {
            errors.push(FieldError::new(
                at("timeoutSeconds"),
                "must be at least 1 and less than intervalSeconds",
            ));
        }
        if check.http_status_codes_for_ready.is_empty()
            || check.http_status_codes_for_ready.len() > LIST_MAX
            || check
                .http_status_codes_for_ready
                .iter()
                .any(|c| !(100..=599).contains(c))
        {
            errors.push(FieldError::new(
                at("httpStatusCodesForReady"),
                format!("give 1-{LIST_MAX} HTTP status codes (100-599)"),
            ));
        }
    }
}

pub(crate) fn validate_upgrade_strategy(strategy: &UpgradeStrategy, errors: &mut Vec<FieldError>) {
    for (name, value) in [
        ("minimumHealthCapacity", strategy.minimum_health_capacity),
        ("maximumOverCapacity", strategy.maximum_over_capacity),
    ] {
        if !(0.0..=1.0).contains(&value) {
            errors.push(FieldError::new(
                format!("upgradeStrategy.{name}"),
                "must be between 0 and 1",
            ));
        }
    }
}

pub(crate) fn validate_unreachable_strategy(
    strategy: &UnreachableStrategy,
    errors: &mut Vec<FieldError>,
) {
    if let UnreachableStrategy::Enabled {
        inactive_after_seconds,
        expunge_after_seconds,
    } = strategy
    {
        if inactive_after_seconds > expunge_after_seconds {
            errors.push(FieldError::new(
                "unreachableStrategy.inactiveAfterSeconds",
                "must not be more than expungeAfterSeconds",
            ));
        }
    }
}

pub(crate) fn validate_fetch(fetch: &[Fetch], errors: &mut Vec<FieldError>) {
    if fetch.len() > LIST_MAX {
        errors.push(FieldError::new(
            "fetch",
            format!("at most {LIST_MAX} artifacts"),
        ));
    }
    for (i, item) in fetch.iter().enumerate() {
        let scheme_ok = ["http://", "https://", "file://"]
            .iter()
            .any(|s| item.uri.starts_with(s));
        if !scheme_ok
            || item
                .uri
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            errors.push(FieldError::new(
                format!("fetch[{i}].uri"),
                "must be an http://, https:// or file:// URI without spaces",
            ));
        } else if item.uri.len() > FETCH_URI_MAX_BYTES {
            errors.push(FieldError::new(
                format!("fetch[{i}].uri"),
                format!("at most {FETCH_URI_MAX_BYTES} bytes"),
            ));
        }
        match &item.output_file {
            Some(name) if !plain_file_name(name) => errors.push(FieldError::new(
                format!("fetch[{i}].outputFile"),
                "must be a plain file name (no /, not . or ..)",
            )),
            Some(_) => {}
            None if scheme_ok && !plain_file_name(uri_file_name(&item.uri)) => {
                errors.push(FieldError::new(
                    format!("fetch[{i}].uri"),
                    "names no file (its path ends in /): give outputFile",
                ))
            }
            None => {}
        }
    }
}

/// Longest `fetch[].uri` taken.
pub const FETCH_URI_MAX_BYTES: usize = 4096;

/// The last segment of a URI's path, without query or fragment: the file name a fetched
/// artifact gets when no `outputFile` is given.
pub fn uri_file_name(uri: &str) -> &str {
    let without = uri.split(['?', '#']).next().unwrap_or_default();
    let path = without.split_once("://").map_or(without, |(_, rest)| rest);
    path.rsplit('/').next().unwrap_or_default()
}

fn plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Archives Mesos unpacks but this agent does not: fetched and kept as they are.
pub const ARCHIVES_NOT_UNPACKED: &[&str] = &[".zip", ".tbz2", ".tar.bz2", ".txz", ".tar.xz"];

/// The fetch items whose `extract` is not honoured (an archive kept as it is).
pub fn fetch_not_unpacked(fetch: &[Fetch]) -> Vec<usize> {
    fetch
        .iter()
        .enumerate()
        .filter(|(_, item)| {
            let name = item
                .output_file
                .as_deref()
                .unwrap_or_else(|| uri_file_name(&item.uri))
                .to_ascii_lowercase();
            item.extract && ARCHIVES_NOT_UNPACKED.iter().any(|ext| name.ends_with(ext))
        })
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constraint_errors(constraints: &[&[&str]]) -> Vec<String> {
        let mut list: Vec<Vec<String>> = constraints
            .iter()
            .map(|c| c.iter().map(|s| s.to_string()).collect())
            .collect();
        let mut errors = Vec::new();
        validate_constraints(&mut list, &mut errors);
        errors.into_iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn every_constraint_operator_is_checked_for_its_value() {
        let good: &[&[&str]] = &[
            &["hostname", "UNIQUE"],
            &["rack", "CLUSTER", "a"],
            &["rack", "CLUSTER"],
            &["rack", "group_by"],
            &["rack", "GROUP_BY", "3"],
            &["hostname", "LIKE", "a.*"],
            &["hostname", "UNLIKE", "b.*"],
            &["rack", "MAX_PER", "2"],
            &["os", "IS", "linux"],
        ];
        assert_eq!(constraint_errors(good), Vec::<String>::new());
        let bad: &[(&[&str], &str)] = &[
            (&["hostname", "UNIQUE", "x"], "constraints[0][2]: UNIQUE takes no value"),
            (&["hostname", "LIKE"], "constraints[0][2]: LIKE needs a value"),
            (&["rack", "MAX_PER", "0"], "constraints[0][2]: MAX_PER the value must be a whole number of at least 1"),
            (&["rack", "GROUP_BY", "x"], "constraints[0][2]: GROUP_BY the value must be a whole number of at least 1"),
            (&["rack", "NEAR"], "constraints[0][1]: unknown operator NEAR; one of UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER, IS"),
            (&["rack"], "constraints[0]: must be [field, operator] or [field, operator, value]"),
        ];
        for (constraint, expected) in bad {
            assert_eq!(constraint_errors(&[constraint]), vec![expected.to_string()]);
        }
    }

    #[test]
    fn health_checks_get_marathons_defaults_and_need_a_port_to_check() {
        let mut checks: Vec<HealthCheck> = serde_json::from_str(
            r#"[{"protocol": "http"}, {"protocol": "COMMAND", "command": {"value": "true"}}]"#,
        )
        .unwrap();
        let mut errors = Vec::new();
        validate_health_checks(&mut checks, &[0], &mut errors);
        assert_eq!(errors, vec![]);
        let http = &checks[0];
        assert_eq!(http.protocol, "HTTP");
        assert_eq!(http.path.as_deref(), Some("/"));
        assert_eq!(http.port_index, Some(0));
        assert_eq!(
            (
                http.grace_period_seconds,
                http.interval_seconds,
                http.timeout_seconds,
                http.max_consecutive_failures,
                http.delay_seconds
            ),
            (300, 60, 20, 3, 15)
        );
        assert_eq!(checks[1].port_index, None);

        let mut no_port: Vec<HealthCheck> =
            serde_json::from_str(r#"[{"protocol": "TCP"}]"#).unwrap();
        let mut errors = Vec::new();
        validate_health_checks(&mut no_port, &[], &mut errors);
        assert_eq!(errors[0].field, "healthChecks[0].portIndex");
        let mut elsewhere: Vec<HealthCheck> =
            serde_json::from_str(r#"[{"protocol": "TCP", "port": 22}]"#).unwrap();
        let mut errors = Vec::new();
        validate_health_checks(&mut elsewhere, &[0, 8080], &mut errors);
        assert_eq!(
            errors[0].field, "healthChecks[0].port",
            "not a port of the task"
        );
        let mut own: Vec<HealthCheck> =
            serde_json::from_str(r#"[{"protocol": "TCP", "port": 8080}]"#).unwrap();
        let mut errors = Vec::new();
        validate_health_checks(&mut own, &[0, 8080], &mut errors);
        assert_eq!(errors, vec![]);
        let mut errors = Vec::new();
        validate_health_checks(&mut no_port, &[], &mut errors);
        assert_eq!(errors[0].field, "healthChecks[0].portIndex");

        let unknown = serde_json::from_str::<HealthCheck>(r#"{"protocol": "TCP", "portIdx": 1}"#);
        assert!(unknown.unwrap_err().to_string().contains("portIdx"));
    }

    #[test]
    fn readiness_checks_get_marathons_defaults_and_need_a_named_port() {
        let named = [Some("http-api".to_string()), None];
        let mut checks: Vec<ReadinessCheck> =
            serde_json::from_str(r#"[{"protocol": "https"}]"#).unwrap();
        let mut errors = Vec::new();
        validate_readiness_checks(&mut checks, &named, &mut errors);
        assert_eq!(errors, vec![]);
        let check = &checks[0];
        assert_eq!(
            (
                check.protocol.as_str(),
                check.path.as_str(),
                check.port_name.as_str()
            ),
            ("HTTPS", "/", "http-api")
        );
        assert_eq!((check.interval_seconds, check.timeout_seconds), (30, 10));
        assert_eq!(check.http_status_codes_for_ready, vec![200]);

        let fields = |json: &str, names: &[Option<String>]| {
            let mut checks: Vec<ReadinessCheck> = serde_json::from_str(json).unwrap();
            let mut errors = Vec::new();
            validate_readiness_checks(&mut checks, names, &mut errors);
            errors.into_iter().map(|e| e.field).collect::<Vec<_>>()
        };
        assert_eq!(
            fields(r#"[{}]"#, &[None]),
            vec!["readinessChecks[0].portName"]
        );
        assert_eq!(fields(r#"[{}, {}]"#, &named), vec!["readinessChecks"]);
        assert_eq!(
            fields(r#"[{"protocol": "TCP", "path": "x"}]"#, &named),
            vec!["readinessChecks[0].protocol", "readinessChecks[0].path"]
        );
        assert_eq!(
            fields(r#"[{"intervalSeconds": 5, "timeoutSeconds": 5}]"#, &named),
            vec!["readinessChecks[0].timeoutSeconds"]
        );
        assert_eq!(
            fields(r#"[{"httpStatusCodesForReady": []}]"#, &named),
            vec!["readinessChecks[0].httpStatusCodesForReady"]
        );
        let unknown = serde_json::from_str::<ReadinessCheck>(r#"{"portIndex": 0}"#);
        assert!(unknown.unwrap_err().to_string().contains("portIndex"));
    }

    #[test]
    fn fetch_items_need_a_file_name_and_unsupported_archives_are_named() {
        let items = |json: &str| serde_json::from_str::<Vec<Fetch>>(json).unwrap();
        let fields = |json: &str| {
            let mut errors = Vec::new();
            validate_fetch(&items(json), &mut errors);
            errors.into_iter().map(|e| e.field).collect::<Vec<_>>()
        };
        assert_eq!(
            fields(
                r#"[{"uri": "https://h/a.tgz?x=1#y"}, {"uri": "https://h/dir/", "outputFile": "f"}]"#
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            fields(r#"[{"uri": "https://h/dir/"}]"#),
            vec!["fetch[0].uri"]
        );
        assert_eq!(
            fields(r#"[{"uri": "https://h/a", "outputFile": "../x"}]"#),
            vec!["fetch[0].outputFile"]
        );
        assert_eq!(uri_file_name("https://h/p/a.tar.gz?sig=1"), "a.tar.gz");
        let kept = items(
            r#"[{"uri": "https://h/a.zip"}, {"uri": "https://h/b.zip", "extract": false},
                {"uri": "https://h/c.tgz"}, {"uri": "https://h/x", "outputFile": "d.TXZ"}]"#,
        );
        assert_eq!(fetch_not_unpacked(&kept), vec![0, 3]);
    }

    #[test]
    fn strategies_are_bounded() {
        let mut errors = Vec::new();
        validate_upgrade_strategy(
            &UpgradeStrategy {
                minimum_health_capacity: 1.5,
                maximum_over_capacity: 0.0,
            },
            &mut errors,
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "upgradeStrategy.minimumHealthCapacity");
        let disabled: UnreachableStrategy = serde_json::from_str(r#""disabled""#).unwrap();
        assert_eq!(disabled, UnreachableStrategy::Disabled(Disabled::Disabled));
        let enabled: UnreachableStrategy =
            serde_json::from_str(r#"{"inactiveAfterSeconds": 10, "expungeAfterSeconds": 5}"#)
                .unwrap();
        let mut errors = Vec::new();
        validate_unreachable_strategy(&enabled, &mut errors);
        assert_eq!(errors[0].field, "unreachableStrategy.inactiveAfterSeconds");
    }
}
