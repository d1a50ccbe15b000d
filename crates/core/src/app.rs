//! Marathon-style app definitions (`/v2/apps`) and their validation.
//!
//! Validation is pure: it checks the definition on its own. Checks that need the cluster
//! (does any agent have room, does the image exist) live with their callers.

use crate::types::{LaunchSpec, Resources};
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// `MESOS` or `DOCKER`; both run in dcos-rs's own runtime.
    #[serde(rename = "type", default = "default_container_type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerSpec>,
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
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    pub fn image(&self) -> Option<&str> {
        self.container
            .as_ref()
            .and_then(|c| c.docker.as_ref())
            .map(|d| d.image.as_str())
    }

    /// Resources one instance needs, rounded up to whole milli-cpus and MiB.
    pub fn resources(&self) -> Resources {
        Resources {
            cpus_milli: (self.cpus * 1000.0).ceil() as u64,
            mem_mib: self.mem.ceil() as u64,
            disk_mib: self.disk.ceil() as u64,
        }
    }

    pub fn launch_spec(&self) -> LaunchSpec {
        LaunchSpec {
            cmd: self.cmd.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            image: self.image().map(str::to_string),
            user: self.user.clone(),
            kill_grace_period_ms: self.task_kill_grace_period_seconds * 1000,
        }
    }

    /// True when two definitions differ in anything but `instances`: such a change needs new
    /// tasks, a scale does not.
    pub fn config_differs(&self, other: &AppSpec) -> bool {
        let mut a = self.clone();
        a.instances = other.instances;
        a != *other
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
    }
    Ok(())
}

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
}
