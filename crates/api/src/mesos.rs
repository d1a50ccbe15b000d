//! Mesos's v1 scheduler API on the wire, as pymesos and mesos-go (JSON codec) speak it
//! (`../shared/COMPAT.md` §6): proto field names as written (snake_case), enums as their
//! names, int64 as plain numbers, empty repeated fields left out, resources with `type`
//! `SCALAR`, `RANGES` or `SET`; events framed in RecordIO (`<decimal length>\n<bytes>`).
//!
//! Calls are read leniently (fields this system does not know are ignored, as Mesos's
//! JSON-to-protobuf parsing does); a call whose `type` is unknown, or which lacks the
//! message its type needs, is refused with the field named.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Mesos's `*ID` messages: `{"value": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Id {
    pub value: String,
}

impl Id {
    pub fn new(value: impl Into<String>) -> Id {
        Id {
            value: value.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scalar {
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub begin: u64,
    pub end: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranges {
    #[serde(default)]
    pub range: Vec<Range>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    #[serde(default)]
    pub item: Vec<String>,
}

/// A resource: `{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}, "role": "*"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ResourceKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Ranges>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Set>,
    #[serde(default = "any_role")]
    pub role: String,
}

fn any_role() -> String {
    "*".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResourceKind {
    Scalar,
    Ranges,
    Set,
}

impl Resource {
    pub fn scalar(name: &str, value: f64) -> Resource {
        Resource {
            name: name.into(),
            kind: ResourceKind::Scalar,
            scalar: Some(Scalar { value }),
            ranges: None,
            set: None,
            role: any_role(),
        }
    }

    pub fn ranges(name: &str, ranges: Vec<Range>) -> Resource {
        Resource {
            name: name.into(),
            kind: ResourceKind::Ranges,
            scalar: None,
            ranges: Some(Ranges { range: ranges }),
            set: None,
            role: any_role(),
        }
    }
}

/// What this system's resources are in Mesos's terms (cpus, mem and disk; ports apart).
pub fn resources_of(r: &dcos_core::Resources) -> Vec<Resource> {
    let mut list = vec![
        Resource::scalar("cpus", r.cpus_milli as f64 / 1000.0),
        Resource::scalar("mem", r.mem_mib as f64),
    ];
    if r.disk_mib > 0 {
        list.push(Resource::scalar("disk", r.disk_mib as f64));
    }
    list
}

/// The cpus, mem and disk a list of resources asks for (rounded up as the other APIs do),
/// and the ports it names; a resource of another name or a wrong type is refused by name.
pub fn resources_from(list: &[Resource]) -> Result<(dcos_core::Resources, Vec<u16>), String> {
    let (mut cpus, mut mem, mut disk) = (0.0, 0.0, 0.0);
    let mut ports = Vec::new();
    for resource in list {
        match (resource.name.as_str(), resource.kind) {
            ("cpus" | "mem" | "disk", ResourceKind::Scalar) => {
                let value = resource
                    .scalar
                    .as_ref()
                    .map(|s| s.value)
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| format!("resource {}: scalar.value must be 0 or more", resource.name))?;
                match resource.name.as_str() {
                    "cpus" => cpus += value,
                    "mem" => mem += value,
                    _ => disk += value,
                }
            }
            ("ports", ResourceKind::Ranges) => {
                for range in resource.ranges.iter().flat_map(|r| &r.range) {
                    if range.begin > range.end || range.end > u64::from(u16::MAX) {
                        return Err(format!("resource ports: {}-{} is not a port range", range.begin, range.end));
                    }
                    if range.end - range.begin > 1_000 {
                        return Err("resource ports: at most 1,000 ports per range".into());
                    }
                    ports.extend((range.begin..=range.end).map(|p| p as u16));
                }
            }
            (name, kind) => {
                return Err(format!(
                    "resource {name} of type {kind:?} is not offered here (cpus, mem, disk: SCALAR; ports: RANGES)"
                ))
            }
        }
    }
    Ok((dcos_core::Resources::of(cpus, mem, disk), ports))
}

// ---------------------------------------------------------------------------------------
// Calls (framework -> master)

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkInfo {
    #[serde(default)]
    pub user: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    /// Seconds a disconnected framework's tasks are kept for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_timeout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<Capability>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    #[serde(rename = "type")]
    pub kind: String,
}

impl FrameworkInfo {
    pub fn has_capability(&self, kind: &str) -> bool {
        self.capabilities.iter().any(|c| c.kind == kind)
    }

    /// Its role: `roles` (MULTI_ROLE) first, else `role`, else `*`.
    pub fn first_role(&self) -> &str {
        self.roles
            .first()
            .or(self.role.as_ref())
            .map_or("*", String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse_seconds: Option<f64>,
}

impl Filters {
    /// Mesos's default when a framework gives none: 5 s.
    pub const DEFAULT_REFUSE_SECONDS: f64 = 5.0;

    /// The filter's length in milliseconds (negative, NaN or absent: the default; at most a
    /// year).
    pub fn refuse_ms(filters: Option<&Filters>) -> u64 {
        let seconds = filters
            .and_then(|f| f.refuse_seconds)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(Self::DEFAULT_REFUSE_SECONDS)
            .min(366.0 * 86_400.0);
        (seconds * 1000.0) as u64
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandUri {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentVariable {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    #[serde(default)]
    pub variables: Vec<EnvironmentVariable>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandInfo {
    /// `true` (the default) runs `value` with `/bin/sh -c`; `false` runs `value` with
    /// `arguments` as its argv.
    #[serde(default = "yes")]
    pub shell: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uris: Vec<CommandUri>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DurationInfo {
    pub nanoseconds: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<DurationInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub name: String,
    pub task_id: Id,
    pub agent_id: Id,
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandInfo>,
    /// Kept as given: an image (`container.mesos.image.docker.name`,
    /// `container.docker.image`) is read from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Value>,
    /// Custom executors are not run: a task with one ends TASK_ERROR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_policy: Option<KillPolicy>,
}

impl TaskInfo {
    /// The image it names, if any (Mesos's UCR `mesos.image.docker.name` or Docker's
    /// `docker.image`).
    pub fn image(&self) -> Option<String> {
        let container = self.container.as_ref()?;
        container
            .pointer("/mesos/image/docker/name")
            .or_else(|| container.pointer("/docker/image"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    #[serde(default)]
    pub task_infos: Vec<TaskInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAgent {
    pub task_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
}

/// A scheduler call, its `type` and the message that type needs, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Subscribe {
        framework_info: FrameworkInfo,
    },
    Teardown,
    Accept {
        offer_ids: Vec<Id>,
        operations: Vec<Operation>,
        filters: Option<Filters>,
    },
    Decline {
        offer_ids: Vec<Id>,
        filters: Option<Filters>,
    },
    Revive,
    Suppress,
    Kill {
        task_id: Id,
        agent_id: Option<Id>,
        kill_policy: Option<KillPolicy>,
    },
    Shutdown,
    Acknowledge {
        agent_id: Id,
        task_id: Id,
        uuid: String,
    },
    /// Empty `tasks`: every task of the framework (implicit reconciliation).
    Reconcile {
        tasks: Vec<TaskAgent>,
    },
    Message {
        agent_id: Id,
        data: String,
    },
    /// Accepted and ignored, as Mesos's allocator ignores it.
    Request,
}

/// A call as sent: its framework id (all but SUBSCRIBE), and the call.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    pub framework_id: Option<Id>,
    pub call: Call,
}

fn field<T: serde::de::DeserializeOwned>(body: &Value, path: &str) -> Result<T, String> {
    let pointer = format!("/{}", path.replace('.', "/"));
    let value = body
        .pointer(&pointer)
        .ok_or_else(|| format!("{path} is required"))?;
    serde_json::from_value(value.clone()).map_err(|e| format!("{path}: {e}"))
}

fn optional<T: serde::de::DeserializeOwned>(body: &Value, path: &str) -> Result<Option<T>, String> {
    let pointer = format!("/{}", path.replace('.', "/"));
    match body.pointer(&pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|e| format!("{path}: {e}")),
    }
}

/// Reads a `POST /api/v1/scheduler` body; the error names the field and why.
pub fn parse_call(body: &[u8]) -> Result<ParsedCall, String> {
    let body: Value =
        serde_json::from_slice(body).map_err(|e| format!("the call is not JSON: {e}"))?;
    if !body.is_object() {
        return Err("a call is a JSON object".into());
    }
    let kind: String = field(&body, "type")?;
    let framework_id: Option<Id> = optional(&body, "framework_id")?;
    let call = match kind.as_str() {
        "SUBSCRIBE" => Call::Subscribe {
            framework_info: field(&body, "subscribe.framework_info")?,
        },
        "TEARDOWN" => Call::Teardown,
        "ACCEPT" => Call::Accept {
            offer_ids: field(&body, "accept.offer_ids")?,
            operations: optional(&body, "accept.operations")?.unwrap_or_default(),
            filters: optional(&body, "accept.filters")?,
        },
        "DECLINE" => Call::Decline {
            offer_ids: field(&body, "decline.offer_ids")?,
            filters: optional(&body, "decline.filters")?,
        },
        "REVIVE" => Call::Revive,
        "SUPPRESS" => Call::Suppress,
        "KILL" => Call::Kill {
            task_id: field(&body, "kill.task_id")?,
            agent_id: optional(&body, "kill.agent_id")?,
            kill_policy: optional(&body, "kill.kill_policy")?,
        },
        "SHUTDOWN" => Call::Shutdown,
        "ACKNOWLEDGE" => Call::Acknowledge {
            agent_id: field(&body, "acknowledge.agent_id")?,
            task_id: field(&body, "acknowledge.task_id")?,
            uuid: field(&body, "acknowledge.uuid")?,
        },
        "RECONCILE" => Call::Reconcile {
            tasks: optional(&body, "reconcile.tasks")?.unwrap_or_default(),
        },
        "MESSAGE" => Call::Message {
            agent_id: field(&body, "message.agent_id")?,
            data: field(&body, "message.data")?,
        },
        "REQUEST" => Call::Request,
        other => {
            return Err(format!(
                "type {other:?} is not a scheduler call this master takes (SUBSCRIBE, TEARDOWN, ACCEPT, DECLINE, REVIVE, SUPPRESS, KILL, SHUTDOWN, ACKNOWLEDGE, RECONCILE, MESSAGE, REQUEST)"
            ))
        }
    };
    if !matches!(call, Call::Subscribe { .. }) && framework_id.is_none() {
        return Err("framework_id is required (every call but SUBSCRIBE)".into());
    }
    Ok(ParsedCall { framework_id, call })
}

// ---------------------------------------------------------------------------------------
// Events (master -> framework)

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub id: Id,
    pub framework_id: Id,
    pub agent_id: Id,
    pub hostname: String,
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<Value>,
    /// The agent's address as Mesos writes a `URL` (`agent_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Value>,
}

/// An agent's URL (`https://10.77.0.21:5051`) as Mesos's `URL` message: `{scheme,
/// address: {hostname, ip, port}, path: "/slave(1)"}`; `None` for a URL without a port.
pub fn agent_url(url: &str) -> Option<Value> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut address = serde_json::json!({ "hostname": host, "port": port });
    if host.parse::<std::net::IpAddr>().is_ok() {
        address["ip"] = Value::String(host.to_string());
    }
    Some(serde_json::json!({ "scheme": scheme, "address": address, "path": "/slave(1)" }))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: Id,
    /// `TASK_RUNNING`, `TASK_FINISHED`, ...
    pub state: String,
    /// `SOURCE_MASTER`, `SOURCE_AGENT` or `SOURCE_EXECUTOR`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
    /// Seconds since the epoch.
    pub timestamp: f64,
    /// Base64; present when the framework must acknowledge the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// An event, serialised as `{"type": "OFFERS", "offers": {...}}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Subscribed {
        framework_id: Id,
        heartbeat_interval_seconds: f64,
    },
    Offers(Vec<Offer>),
    Rescind {
        offer_id: Id,
    },
    Update(TaskStatus),
    Message {
        agent_id: Id,
        data: String,
    },
    Failure {
        agent_id: Id,
    },
    Error {
        message: String,
    },
    Heartbeat,
}

impl Event {
    pub fn to_json(&self) -> Value {
        use serde_json::json;
        match self {
            Event::Subscribed {
                framework_id,
                heartbeat_interval_seconds,
            } => json!({
                "type": "SUBSCRIBED",
                "subscribed": {
                    "framework_id": framework_id,
                    "heartbeat_interval_seconds": heartbeat_interval_seconds,
                },
            }),
            Event::Offers(offers) => json!({ "type": "OFFERS", "offers": { "offers": offers } }),
            Event::Rescind { offer_id } => {
                json!({ "type": "RESCIND", "rescind": { "offer_id": offer_id } })
            }
            Event::Update(status) => json!({ "type": "UPDATE", "update": { "status": status } }),
            Event::Message { agent_id, data } => json!({
                "type": "MESSAGE",
                "message": { "agent_id": agent_id, "executor_id": { "value": "" }, "data": data },
            }),
            Event::Failure { agent_id } => {
                json!({ "type": "FAILURE", "failure": { "agent_id": agent_id } })
            }
            Event::Error { message } => json!({ "type": "ERROR", "error": { "message": message } }),
            Event::Heartbeat => json!({ "type": "HEARTBEAT" }),
        }
    }

    /// The event framed for the subscription's stream (RecordIO).
    pub fn record(&self) -> Vec<u8> {
        record(self.to_json().to_string().as_bytes())
    }
}

/// RecordIO: `<decimal length>\n<bytes>`.
pub fn record(bytes: &[u8]) -> Vec<u8> {
    let mut framed = format!("{}\n", bytes.len()).into_bytes();
    framed.extend_from_slice(bytes);
    framed
}

/// Splits a RecordIO stream into its records; the rest (an incomplete record) is returned
/// as the second part.
pub fn records(mut stream: &[u8]) -> Result<(Vec<&[u8]>, &[u8]), String> {
    let mut out = Vec::new();
    while let Some(newline) = stream.iter().position(|b| *b == b'\n') {
        let length: usize = std::str::from_utf8(&stream[..newline])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                format!(
                    "{:?} is not a record length",
                    String::from_utf8_lossy(&stream[..newline])
                )
            })?;
        let rest = &stream[newline + 1..];
        if rest.len() < length {
            break;
        }
        out.push(&rest[..length]);
        stream = &rest[length..];
    }
    Ok((out, stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_subscribe_as_pymesos_sends_it_is_read() {
        let body = json!({
            "type": "SUBSCRIBE",
            "subscribe": {"framework_info": {
                "user": "root", "name": "minimal", "hostname": "h1",
                "failover_timeout": 100.0,
                "capabilities": [{"type": "PARTITION_AWARE"}],
                "roles": ["analytics"],
                "some_future_field": 1,
            }},
        });
        let parsed = parse_call(body.to_string().as_bytes()).unwrap();
        let Call::Subscribe { framework_info } = parsed.call else {
            panic!("{parsed:?}")
        };
        assert_eq!(framework_info.name, "minimal");
        assert_eq!(framework_info.first_role(), "analytics");
        assert!(framework_info.has_capability("PARTITION_AWARE"));
        assert_eq!(framework_info.failover_timeout, Some(100.0));
        assert_eq!(parsed.framework_id, None);
    }

    #[test]
    fn an_accept_with_a_launch_reads_its_tasks_resources_and_image() {
        let body = json!({
            "type": "ACCEPT", "framework_id": {"value": "f1"},
            "accept": {
                "offer_ids": [{"value": "o1"}],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
                    "name": "t", "task_id": {"value": "t1"}, "agent_id": {"value": "a1"},
                    "resources": [
                        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}, "role": "*"},
                        {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}},
                        {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31001}]}},
                    ],
                    "command": {"value": "sleep 10", "uris": [{"value": "https://x/y.tgz", "extract": true}]},
                    "container": {"type": "MESOS", "mesos": {"image": {"type": "DOCKER", "docker": {"name": "busybox"}}}},
                }]}}],
                "filters": {"refuse_seconds": 30},
            },
        });
        let parsed = parse_call(body.to_string().as_bytes()).unwrap();
        let Call::Accept {
            offer_ids,
            operations,
            filters,
        } = parsed.call
        else {
            panic!()
        };
        assert_eq!(offer_ids, vec![Id::new("o1")]);
        assert_eq!(Filters::refuse_ms(filters.as_ref()), 30_000);
        let task = &operations[0].launch.as_ref().unwrap().task_infos[0];
        assert!(
            task.command.as_ref().unwrap().shell,
            "shell defaults to true"
        );
        assert_eq!(task.image().as_deref(), Some("busybox"));
        let (resources, ports) = resources_from(&task.resources).unwrap();
        assert_eq!(resources, dcos_core::Resources::of(0.5, 64.0, 0.0));
        assert_eq!(ports, vec![31000, 31001]);
    }

    #[test]
    fn bad_calls_are_refused_naming_the_field() {
        let refuse = |body: Value| parse_call(body.to_string().as_bytes()).unwrap_err();
        assert!(
            refuse(json!({"type": "SUBSCRIBE"})).contains("subscribe.framework_info is required")
        );
        assert!(
            refuse(json!({"type": "NOPE", "framework_id": {"value": "f"}}))
                .contains("\"NOPE\" is not a scheduler call")
        );
        assert!(refuse(json!({"type": "REVIVE"})).contains("framework_id is required"));
        assert!(
            refuse(json!({"type": "KILL", "framework_id": {"value": "f"}}))
                .contains("kill.task_id is required")
        );
        assert!(refuse(json!({"type": "DECLINE", "framework_id": {"value": "f"}, "decline": {"offer_ids": "o1"}})).starts_with("decline.offer_ids:"));
        assert!(parse_call(b"[").unwrap_err().contains("not JSON"));
        let gpus = [Resource::scalar("gpus", 1.0)];
        assert!(resources_from(&gpus).unwrap_err().contains("resource gpus"));
        assert_eq!(Filters::refuse_ms(None), 5_000);
        assert_eq!(
            Filters::refuse_ms(Some(&Filters {
                refuse_seconds: Some(-1.0)
            })),
            5_000
        );
    }

    #[test]
    fn agent_urls_are_written_as_mesos_urls() {
        assert_eq!(
            agent_url("https://10.77.0.21:5051"),
            Some(
                json!({"scheme": "https", "address": {"hostname": "10.77.0.21", "ip": "10.77.0.21", "port": 5051}, "path": "/slave(1)"})
            )
        );
        assert_eq!(
            agent_url("http://node-1:5051/"),
            Some(
                json!({"scheme": "http", "address": {"hostname": "node-1", "port": 5051}, "path": "/slave(1)"})
            )
        );
        assert_eq!(agent_url("node-1"), None);
    }

    #[test]
    fn events_are_written_as_mesos_writes_them_and_framed_in_recordio() {
        let offer = Offer {
            id: Id::new("o1"),
            framework_id: Id::new("f1"),
            agent_id: Id::new("a1"),
            hostname: "h1".into(),
            resources: resources_of(&dcos_core::Resources::of(2.0, 1024.0, 0.0)),
            attributes: vec![],
            url: None,
        };
        assert_eq!(
            Event::Offers(vec![offer]).to_json(),
            json!({"type": "OFFERS", "offers": {"offers": [{
                "id": {"value": "o1"}, "framework_id": {"value": "f1"}, "agent_id": {"value": "a1"},
                "hostname": "h1",
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2.0}, "role": "*"},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": 1024.0}, "role": "*"},
                ],
            }]}})
        );
        let heartbeat = Event::Heartbeat.record();
        assert_eq!(heartbeat, b"20\n{\"type\":\"HEARTBEAT\"}".to_vec());
        let status = TaskStatus {
            task_id: Id::new("t1"),
            state: "TASK_RUNNING".into(),
            source: "SOURCE_AGENT".into(),
            reason: None,
            message: None,
            agent_id: Some(Id::new("a1")),
            timestamp: 1_767_225_600.25,
            uuid: Some("AAEC".into()),
        };
        let mut stream = Event::Update(status).record();
        stream.extend(heartbeat);
        stream.extend(b"99\n{\"type\"");
        let (events, rest) = records(&stream).unwrap();
        assert_eq!(events.len(), 2);
        let update: Value = serde_json::from_slice(events[0]).unwrap();
        assert_eq!(update["update"]["status"]["agent_id"]["value"], "a1");
        assert_eq!(update["update"]["status"]["timestamp"], 1_767_225_600.25);
        assert_eq!(rest, b"99\n{\"type\"");
        assert!(records(b"x\n{}").is_err());
    }
}
