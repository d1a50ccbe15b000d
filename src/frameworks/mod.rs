//! The built-in frameworks the leading master runs, side by side, as Nomad runs its
//! schedulers: each is fed the applied state and the time and proposes what to do
//! (`crate::master::Framework`); the master performs the proposals (writes them through
//! Raft, tells the agents). A framework
//! owns its tasks (`dcos_core::TaskOwner`) and builds them completely, including its own
//! environment variables, so agents know nothing of any framework.
//!
//! - `events`: the event streams, Marathon's `/v2/events` and ours, `/cluster/v1/events`.
//! - `services/`: Marathon's `/v2` (apps, deployments).
//! - `jobs/`: Chronos's and Metronome's scheduled jobs (one store behind both APIs).
//! - `mesos/`: external frameworks through Mesos's v1 scheduler API (offers, their tasks'
//!   status updates).

pub mod events;
pub mod jobs;
pub mod mesos;
pub mod services;

use crate::master::{Framework, Master};
use std::sync::Arc;

/// The frameworks every master runs and their HTTP routes.
pub struct Builtin {
    pub frameworks: Vec<Arc<dyn Framework>>,
    /// Every framework's routes on the master's API.
    pub routes: axum::Router<Arc<Master>>,
    /// Mesos's scheduler API alone (`POST /api/v1/scheduler`), for a master's opt-in
    /// plain-HTTP listener (`[mesos] scheduler_http_listen`).
    pub scheduler_routes: axum::Router<Arc<Master>>,
}

/// The frameworks every master runs, and their HTTP routes.
pub fn builtin() -> Builtin {
    let services = services::Services::default();
    let events = Arc::new(events::Events::default());
    let mesos = Arc::new(mesos::Mesos::default());
    let routes = services::http::routes(Arc::clone(&services.waiting))
        .merge(jobs::chronos::routes())
        .merge(jobs::metronome::routes())
        .route(
            dcos_api::routes::cluster::JOBS,
            axum::routing::get(jobs::list_jobs),
        )
        .route(
            dcos_api::routes::cluster::JOB_HISTORY,
            axum::routing::put(jobs::set_retention),
        )
        .route(
            dcos_api::routes::cluster::JOB_RUNS,
            axum::routing::post(jobs::start_run),
        )
        .route(
            dcos_api::routes::cluster::JOB,
            axum::routing::get(jobs::job_record),
        )
        .route(
            dcos_api::routes::cluster::EVENTS,
            axum::routing::get(events::cluster_stream),
        )
        .merge(mesos::http::routes())
        .merge(mesos::operator::routes())
        .layer(axum::Extension(events))
        .layer(axum::Extension(Arc::clone(&mesos)));
    let scheduler_routes = axum::Router::new()
        .route(
            mesos::http::SCHEDULER,
            axum::routing::post(mesos::http::scheduler),
        )
        .layer(axum::Extension(Arc::clone(&mesos)));
    let frameworks: Vec<Arc<dyn Framework>> = vec![Arc::new(services), Arc::new(jobs::Jobs), mesos];
    Builtin {
        frameworks,
        routes,
        scheduler_routes,
    }
}
