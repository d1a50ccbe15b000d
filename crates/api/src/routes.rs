//! Every path of every API, by family: the constants servers route on (axum's `{param}`
//! syntax where a path has parameters) and the functions clients build concrete paths with,
//! so a path is written once.

/// Marathon's `/v2`: the services framework.
pub mod marathon {
    pub const APPS: &str = "/v2/apps";
    /// An app (its id may hold `/`), or `<id>/tasks` for its tasks.
    pub const APP: &str = "/v2/apps/{*id}";
    pub const TASKS: &str = "/v2/tasks";
    pub const DEPLOYMENTS: &str = "/v2/deployments";
    pub const DEPLOYMENT: &str = "/v2/deployments/{id}";
    pub const TASKS_DELETE: &str = "/v2/tasks/delete";
    pub const GROUPS: &str = "/v2/groups";
    /// A group (its id may hold `/`).
    pub const GROUP: &str = "/v2/groups/{*id}";
    pub const QUEUE: &str = "/v2/queue";
    /// Server-sent events.
    pub const EVENTS: &str = "/v2/events";
    /// `<app id>/delay`.
    pub const QUEUE_ITEM: &str = "/v2/queue/{*rest}";
    pub const INFO: &str = "/v2/info";
    pub const LEADER: &str = "/v2/leader";
    /// Marathon's liveness answer (`pong`), outside `/v2`.
    pub const PING: &str = "/ping";
    /// DC/OS serves Marathon under this prefix as well (`/marathon/v2/apps`).
    pub const DCOS_PREFIX: &str = "/marathon";
    /// ... and under this one, where the DC/OS CLI looks for it (`<dcos_url>/service/marathon/`).
    pub const DCOS_SERVICE_PREFIX: &str = "/service/marathon";

    /// `/v2/apps/web` for `web` or `/web`.
    pub fn app(id: &str) -> String {
        format!("{APPS}/{}", id.trim_start_matches('/'))
    }
}

/// This system's `/cluster/v1` (and the health, metrics and dashboard routes of a master).
pub mod cluster {
    pub const DASHBOARD: &str = "/";
    pub const HEALTH: &str = "/health";
    pub const READY: &str = "/ready";
    pub const METRICS: &str = "/metrics";
    /// The OpenAPI 3 description of this API (docs/openapi.json).
    pub const OPENAPI: &str = "/openapi.json";
    pub const NODES: &str = "/cluster/v1/nodes";
    /// Every task with this system's fields (`TaskView`); Marathon's `/v2/tasks` has fewer.
    pub const TASKS: &str = "/cluster/v1/tasks";
    /// A task's `stdout` or `stderr` through the master, from its agent (`?offset=N`, and
    /// `follow=true` to stream it while the task runs): for the dashboard, which reaches
    /// only the master's origin.
    pub const TASK_LOG: &str = "/cluster/v1/tasks/{id}/logs/{stream}";
    /// A running task's resource usage as its agent measures it (cgroup counters).
    pub const TASK_USAGE: &str = "/cluster/v1/tasks/{id}/usage";
    /// The entries of a directory of a task's sandbox (`?path=`, relative to the sandbox).
    pub const TASK_FILES: &str = "/cluster/v1/tasks/{id}/files";
    /// A page of a file of a task's sandbox (`?path=&offset=&length=`).
    pub const TASK_FILE_READ: &str = "/cluster/v1/tasks/{id}/files/read";
    /// The cluster's usage over the last hour, as the answering master sampled it.
    pub const USAGE: &str = "/cluster/v1/usage";
    pub const MASTERS: &str = "/cluster/v1/masters";
    /// POST to a master: it stands for election now (upgrades move the leadership off the
    /// master they restart next). Served by the master called, never passed on.
    pub const LEADERSHIP: &str = "/cluster/v1/leadership";
    /// POST `{"serial": "<hex>"}`: every master refuses that certificate from then on.
    pub const REVOKED: &str = "/cluster/v1/certificates/revoked";
    /// GET: this master's copy of the whole replicated state, at one applied index.
    pub const BACKUP: &str = "/cluster/v1/backup";
    /// POST: a backup's definitions (apps, jobs, frameworks) into this cluster.
    pub const RESTORE: &str = "/cluster/v1/restore";
    pub const MASTER: &str = "/cluster/v1/masters/{id}";
    pub const AGENT: &str = "/cluster/v1/agents/{id}";
    pub const AGENT_DRAIN: &str = "/cluster/v1/agents/{id}/drain";
    /// Why an app waits for room, per agent (`dcos-rs app why`).
    pub const PLACEMENT: &str = "/cluster/v1/placement/{*id}";
    /// An app's facts Marathon's objects cannot carry (its deadline, the last automatic
    /// rollback).
    pub const APP: &str = "/cluster/v1/apps/{*id}";
    /// Every job: its schedule in words, next run, parents, latest run.
    pub const JOBS: &str = "/cluster/v1/jobs";
    /// A job's facts Chronos's and Metronome's objects cannot carry (runs' scheduled
    /// instants and attempts with their output, skipped instants), and its summary.
    pub const JOB: &str = "/cluster/v1/jobs/{id}";
    /// A run now, or a step of a workflow run again (`{"workflowId": ...}`).
    pub const JOB_RUNS: &str = "/cluster/v1/jobs/{id}/runs";
    /// How much of a job's history is kept (`{"runs", "maxAgeSeconds"}`).
    pub const JOB_HISTORY: &str = "/cluster/v1/jobs/{id}/history";

    pub fn job(id: &str) -> String {
        format!("{JOBS}/{id}")
    }
    /// Every framework's events (server-sent): Marathon's and the jobs framework's.
    pub const EVENTS: &str = "/cluster/v1/events";
    /// Mesos-DNS's host lookup as DC/OS serves it (the DC/OS CLI asks it who leads).
    pub const MESOS_DNS_HOSTS: &str = "/mesos_dns/v1/hosts/{name}";

    pub fn placement(app_id: &str) -> String {
        format!("/cluster/v1/placement/{}", app_id.trim_start_matches('/'))
    }

    pub fn app(app_id: &str) -> String {
        format!("/cluster/v1/apps/{}", app_id.trim_start_matches('/'))
    }

    pub fn master(id: u64) -> String {
        format!("{MASTERS}/{id}")
    }

    pub fn agent(id: &str) -> String {
        format!("/cluster/v1/agents/{id}")
    }

    pub fn agent_drain(id: &str) -> String {
        format!("{}/drain", agent(id))
    }

    /// `/cluster/v1/tasks/<id>/logs/stdout`.
    pub fn task_log(task_id: &str, stream: &str) -> String {
        format!("{TASKS}/{task_id}/logs/{stream}")
    }

    pub fn task_usage(task_id: &str) -> String {
        format!("{TASKS}/{task_id}/usage")
    }

    pub fn task_files(task_id: &str) -> String {
        format!("{TASKS}/{task_id}/files")
    }

    pub fn task_file_read(task_id: &str) -> String {
        format!("{TASKS}/{task_id}/files/read")
    }
}

/// An agent's own API (logs, images, containers), on the agent's port.
pub mod agent {
    pub const HEALTH: &str = "/health";
    pub const METRICS: &str = "/metrics";
    pub const TASK_LOG: &str = "/files/tasks/{task_id}/{stream}";
    pub const IMAGES: &str = "/images";
    pub const IMAGES_PULL: &str = "/images/pull";
    pub const IMAGE: &str = "/images/{*reference}";
    pub const CONTAINERS: &str = "/containers";
    /// Mesos's `/files/read.json?path=&offset=&length=`: a page of a task's log or of a
    /// file under its working directory.
    pub const FILES_READ: &str = "/files/read.json";
    /// Mesos's `/files/browse.json?path=`: the entries of a directory of a task's sandbox.
    pub const FILES_BROWSE: &str = "/files/browse.json";
    /// Mesos's virtual path of a task's sandbox on its agent (the executor's latest run),
    /// which the `/files` endpoints take as well as the sandbox's real path: a caller that
    /// knows the task, but not the agent's work dir, names the sandbox with it.
    pub fn sandbox_virtual_path(framework_id: &str, executor_id: &str) -> String {
        format!("/frameworks/{framework_id}/executors/{executor_id}/runs/latest")
    }

    /// `/files/tasks/<id>/stdout`.
    pub fn task_log(task_id: &str, stream: &str) -> String {
        format!("/files/tasks/{task_id}/{stream}")
    }

    pub fn image(reference: &str) -> String {
        format!("{IMAGES}/{reference}")
    }
}

/// Between nodes (mutual TLS): the agent protocol on a master's port, and Raft's RPCs.
pub mod internal {
    pub const AGENT_CONNECT: &str = "/internal/agent/v1/connect";
    pub const AGENT_STATUS: &str = "/internal/agent/v1/status";
    pub const AGENT_HEARTBEAT: &str = "/internal/agent/v1/heartbeat";
    pub const AGENT_IMAGES: &str = "/internal/agent/v1/images";
    /// `append`, `vote` or `snapshot` (see `dcos_raft::network`).
    pub const RAFT: &str = "/internal/raft/{rpc}";
    /// POST by a master to the leader: the build it runs (`Command::MasterBuild`).
    pub const MASTER_BUILD: &str = "/internal/master/v1/build";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_paths_match_their_routes() {
        assert_eq!(marathon::app("/shop/web"), "/v2/apps/shop/web");
        assert_eq!(marathon::app("web"), "/v2/apps/web");
        assert_eq!(cluster::master(4), "/cluster/v1/masters/4");
        assert_eq!(cluster::agent_drain("a1"), "/cluster/v1/agents/a1/drain");
        assert_eq!(agent::task_log("t", "stderr"), "/files/tasks/t/stderr");
        assert_eq!(
            agent::sandbox_virtual_path("f1", "t1"),
            "/frameworks/f1/executors/t1/runs/latest"
        );
        assert_eq!(
            cluster::task_log("web.1", "stdout"),
            "/cluster/v1/tasks/web.1/logs/stdout"
        );
        assert_eq!(cluster::task_usage("t"), "/cluster/v1/tasks/t/usage");
        assert_eq!(cluster::task_files("t"), "/cluster/v1/tasks/t/files");
        assert_eq!(
            cluster::task_file_read("t"),
            "/cluster/v1/tasks/t/files/read"
        );
        for (route, built) in [
            (cluster::TASK_LOG, cluster::task_log("{id}", "{stream}")),
            (cluster::TASK_USAGE, cluster::task_usage("{id}")),
            (cluster::TASK_FILES, cluster::task_files("{id}")),
            (cluster::TASK_FILE_READ, cluster::task_file_read("{id}")),
        ] {
            assert_eq!(route, built);
        }
        assert_eq!(agent::image("busybox:1"), "/images/busybox:1");
    }
}
