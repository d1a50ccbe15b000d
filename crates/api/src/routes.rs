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
        assert_eq!(agent::image("busybox:1"), "/images/busybox:1");
    }
}
