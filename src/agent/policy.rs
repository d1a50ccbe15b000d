//! What a task may do to its agent's host: the operator's decision, in agent.toml (and
//! `dcos-rs up` flags), never the app definition's.
//!
//! - Host-path volumes (`hostPath` absolute) only under `host_paths`, empty by default;
//!   `/`, `/proc`, `/sys` and `/dev` (and what is under them) never, whatever the list says.
//!   The path is resolved (symlinks followed) before the check, so a link inside an allowed
//!   directory cannot point out of it.
//! - Tasks without an image run as `task_user` (default `nobody`) unless they name a user;
//!   uid 0 for such a task (the host's root, with every capability) needs
//!   `allow_root_tasks`. Container tasks run as their image's user inside their own
//!   namespaces, whatever these settings say.

use std::path::{Path, PathBuf};

/// Never bound into a task, whatever `host_paths` says.
pub const NEVER_HOST_PATHS: &[&str] = &["/proc", "/sys", "/dev"];
/// The default user of tasks without an image.
pub const DEFAULT_TASK_USER: &str = "nobody";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPolicy {
    /// Directories under which host-path volumes may be (resolved, absolute).
    pub host_paths: Vec<PathBuf>,
    /// User of tasks without an image that name none.
    pub task_user: String,
    /// Tasks without an image may run as uid 0.
    pub allow_root_tasks: bool,
    /// Tasks' artifacts may come from this host's loopback or link-local addresses
    /// (`fetch`): off by default, since the agent fetches as itself, from services a
    /// container task could not reach (a cloud's metadata service, anything on 127.0.0.1).
    pub allow_local_fetch: bool,
}

impl Default for TaskPolicy {
    fn default() -> Self {
        TaskPolicy {
            host_paths: Vec::new(),
            task_user: DEFAULT_TASK_USER.to_string(),
            allow_root_tasks: false,
            allow_local_fetch: false,
        }
    }
}

/// Why `path` may never be given to a task (`None`: it may be, if allowed).
fn forbidden(path: &Path) -> Option<&'static str> {
    if path == Path::new("/") {
        return Some("the host's root");
    }
    NEVER_HOST_PATHS
        .iter()
        .find(|never| path.starts_with(never))
        .map(|_| "the host's kernel and device interfaces")
}

impl TaskPolicy {
    /// Checks the operator's `host_paths` (`setting` names where they came from) and resolves
    /// each: absolute, existing, none of the never-allowed ones.
    pub fn with_host_paths(mut self, paths: &[PathBuf], setting: &str) -> Result<Self, String> {
        self.host_paths.clear();
        for path in paths {
            if !path.is_absolute() {
                return Err(format!(
                    "{setting}: {} is not an absolute path",
                    path.display()
                ));
            }
            let resolved = path
                .canonicalize()
                .map_err(|e| format!("{setting}: {}: {e}", path.display()))?;
            if let Some(what) = forbidden(&resolved) {
                return Err(format!(
                    "{setting}: {} is {what}, which tasks are never given",
                    resolved.display()
                ));
            }
            self.host_paths.push(resolved);
        }
        Ok(self)
    }

    /// The resolved host path for volume `field` (`container.volumes[i].hostPath`), or why
    /// the task may not have it.
    pub fn host_path(&self, field: &str, requested: &str) -> Result<PathBuf, String> {
        let resolved = Path::new(requested)
            .canonicalize()
            .map_err(|e| format!("{field} {requested}: {e} on this agent"))?;
        if let Some(what) = forbidden(&resolved) {
            return Err(format!(
                "{field} {requested} is {what}: no task may mount it"
            ));
        }
        if !self.host_paths.iter().any(|dir| resolved.starts_with(dir)) {
            let allowed = if self.host_paths.is_empty() {
                "none is allowed".to_string()
            } else {
                let list: Vec<String> = self
                    .host_paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                format!("allowed: {}", list.join(", "))
            };
            return Err(format!(
                "{field} {requested}{} is not under this agent's host_paths ({allowed}); the agent's operator may add it (agent.toml `host_paths`, `dcos-rs up --allow-host-path`)",
                if resolved != Path::new(requested) {
                    format!(" (resolved: {})", resolved.display())
                } else {
                    String::new()
                }
            ));
        }
        Ok(resolved)
    }

    /// The user a task without an image runs as: its own, else `task_user`.
    pub fn plain_task_user<'a>(&'a self, requested: Option<&'a str>) -> &'a str {
        requested
            .filter(|u| !u.is_empty())
            .unwrap_or(&self.task_user)
    }

    /// Refuses uid 0 for a task without an image unless the agent allows it.
    pub fn check_plain_uid(&self, user: &str, uid: u32) -> Result<(), String> {
        if uid == 0 && !self.allow_root_tasks {
            return Err(format!(
                "user {user:?} is root (uid 0) on this agent's host, and tasks without an image may run as root only where the agent allows it (agent.toml `allow_root_tasks = true`, `dcos-rs up --allow-root-tasks`); give the app another `user`, or an image"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowing(dir: &Path) -> TaskPolicy {
        TaskPolicy::default()
            .with_host_paths(&[dir.to_path_buf()], "host_paths")
            .unwrap()
    }

    #[test]
    fn host_paths_are_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        let field = "container.volumes[0].hostPath";
        let none = TaskPolicy::default();
        let error = none.host_path(field, data.to_str().unwrap()).unwrap_err();
        assert!(
            error.contains("none is allowed") && error.contains("host_paths"),
            "{error}"
        );
        let policy = allowing(&data);
        let sub = data.join("sub");
        assert_eq!(
            policy.host_path(field, sub.to_str().unwrap()).unwrap(),
            sub.canonicalize().unwrap()
        );
        let error = policy
            .host_path(field, dir.path().to_str().unwrap())
            .unwrap_err();
        assert!(error.contains("allowed: "), "{error}");
        // A link inside the allowed directory that points out of it.
        std::os::unix::fs::symlink("/etc", data.join("etc")).unwrap();
        let error = policy
            .host_path(field, data.join("etc").to_str().unwrap())
            .unwrap_err();
        assert!(error.contains("resolved: /etc"), "{error}");
        // Never, whatever the list: the list itself is refused.
        for never in ["/", "/proc", "/sys/fs", "/dev"] {
            let error = TaskPolicy::default()
                .with_host_paths(&[PathBuf::from(never)], "host_paths")
                .unwrap_err();
            assert!(error.contains("never"), "{never}: {error}");
            let error = policy.host_path(field, never).unwrap_err();
            assert!(error.contains("no task may mount it"), "{never}: {error}");
        }
        let error = TaskPolicy::default()
            .with_host_paths(&[PathBuf::from("relative")], "--allow-host-path")
            .unwrap_err();
        assert!(error.starts_with("--allow-host-path"), "{error}");
    }

    #[test]
    fn plain_tasks_run_as_the_default_user_and_root_needs_the_setting() {
        let policy = TaskPolicy::default();
        assert_eq!(policy.plain_task_user(None), "nobody");
        assert_eq!(policy.plain_task_user(Some("")), "nobody");
        assert_eq!(policy.plain_task_user(Some("app")), "app");
        assert!(policy.check_plain_uid("nobody", 65534).is_ok());
        let error = policy.check_plain_uid("root", 0).unwrap_err();
        assert!(error.contains("allow_root_tasks"), "{error}");
        let root_ok = TaskPolicy {
            allow_root_tasks: true,
            ..TaskPolicy::default()
        };
        assert!(root_ok.check_plain_uid("root", 0).is_ok());
    }
}
