//! What the jobs framework keeps in the replicated state (`JobsState`): jobs (one store
//! behind Chronos's and Metronome's APIs), their runs, counts and history, and the
//! scheduler's cursor per job, which makes a scheduled run exactly-once: the leader decides
//! each scheduled instant with a command carrying the instant (`start_run` or `skip`), and
//! a command for an instant at or before the job's cursor is refused, so a new leader that
//! proposes the same instant again changes nothing.

use super::policy::{Concurrency, SkipReason};
use crate::command::Reject;
use crate::types::{Task, TaskOutput, TaskOwner, TaskState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Finished runs kept per job (history) unless the job asks for fewer.
pub const HISTORY_KEPT: usize = 100;
/// Most retries of a run.
pub const RETRIES_MAX: u32 = 100;
/// Skipped instants kept per job (each a range of instants with one reason).
pub const SKIPS_KEPT: usize = 50;
/// Finished runs of a job that keep their output's end (older history keeps the rest).
pub const OUTPUTS_KEPT: usize = 10;
/// Most bytes of runs' output the jobs state holds in all (it is replicated and in every
/// snapshot): past it the oldest outputs are dropped until it holds 7/8 of it.
pub const OUTPUT_BUDGET_BYTES: u64 = 256 << 20;

fn output_len(output: &Option<TaskOutput>) -> u64 {
    output.as_ref().map_or(0, |o| o.len() as u64)
}

/// A job: what runs, when, after what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    /// Metronome's dotted lowercase id, or Chronos's name.
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub run: RunSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
    /// Chronos's `parents`: runs after all of them succeeded since it last started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<String>,
    /// Further attempts after a failed one.
    #[serde(default)]
    pub retries: u32,
    /// Chronos's `softError`: a failure does not count against the job's stats.
    #[serde(default)]
    pub soft_error: bool,
    #[serde(default)]
    pub disabled: bool,
    /// Finished runs to keep (at most `HISTORY_KEPT`).
    #[serde(default = "default_history")]
    pub history_kept: usize,
    /// Finished runs older than this leave the history (`None`: kept by count alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_max_age_seconds: Option<u64>,
    /// What an API's job held that the framework does not act on (Chronos's `owner`,
    /// `shell`, ...), kept as given to be shown again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kept: BTreeMap<String, serde_json::Value>,
}

fn default_history() -> usize {
    HISTORY_KEPT
}

/// What one attempt of a run executes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    pub cpus: f64,
    pub mem: f64,
    #[serde(default)]
    pub disk: f64,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Metronome's `activeDeadlineSeconds`, Chronos's `maxCompletionTime`: an attempt
    /// running longer is killed and fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_seconds: Option<u64>,
    /// Where its tasks may run: `[field, IS|LIKE|UNLIKE, value]` on the agent's hostname or
    /// attributes (Chronos's `constraints`, Metronome's `placement.constraints`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Vec<String>>,
    /// Artifacts fetched into each attempt's sandbox before it starts (Chronos's `fetch`
    /// and `uris`, Metronome's `artifacts`), as the services framework's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fetch: Vec<crate::types::TaskFetch>,
}

/// Constraint operators a job's run takes (Metronome's; Chronos's `EQUALS` and Metronome's
/// `EQ` are `IS`).
pub const RUN_OPERATORS: &[&str] = &["IS", "LIKE", "UNLIKE"];

impl RunSpec {
    pub fn resources(&self) -> crate::types::Resources {
        crate::types::Resources::of(self.cpus, self.mem, self.disk)
    }

    /// A placement constraint as a run keeps it: the operator upper-cased and `EQ`/`EQUALS`
    /// as `IS`; a `LIKE`/`UNLIKE` pattern must be a regular expression.
    pub fn constraint(field: &str, operator: &str, value: &str) -> Result<Vec<String>, String> {
        let operator = match operator.to_ascii_uppercase().as_str() {
            "EQ" | "EQUALS" | "IS" => "IS",
            "LIKE" => "LIKE",
            "UNLIKE" => "UNLIKE",
            other => {
                return Err(format!(
                    "operator {other:?} is not IS (EQ, EQUALS), LIKE or UNLIKE"
                ))
            }
        };
        if field.is_empty() {
            return Err("the attribute is empty".into());
        }
        if operator != "IS" && crate::constraints::anchored(value).is_none() {
            return Err(format!("{value:?} is not a regular expression"));
        }
        Ok(vec![
            field.to_string(),
            operator.to_string(),
            value.to_string(),
        ])
    }

    /// Its constraints for placement (each checked by `constraint` when written).
    pub fn placement_constraints(&self) -> Vec<crate::constraints::Constraint> {
        self.constraints
            .iter()
            .filter_map(|raw| crate::constraints::Constraint::parse(raw))
            .collect()
    }

    /// What is wrong with its artifacts, as Marathon's `fetch` is checked (schemes, sizes,
    /// file names): `(index, reason)`.
    pub fn check_fetch(fetch: &[crate::types::TaskFetch]) -> Vec<(Option<usize>, String)> {
        let as_marathon: Vec<crate::services::fields::Fetch> = fetch
            .iter()
            .map(|f| crate::services::fields::Fetch {
                uri: f.uri.clone(),
                extract: f.extract,
                executable: f.executable,
                cache: f.cache,
                output_file: f.output_file.clone(),
            })
            .collect();
        let mut errors = Vec::new();
        crate::services::fields::validate_fetch(&as_marathon, &mut errors);
        errors
            .into_iter()
            .map(|e| {
                // `fetch[3].uri` -> index 3 and "uri: ..."
                let index = e
                    .field
                    .strip_prefix("fetch[")
                    .and_then(|rest| rest.split(']').next())
                    .and_then(|n| n.parse().ok());
                let part = e.field.split_once('.').map(|(_, part)| part);
                let reason = match part {
                    Some(part) => format!("{part}: {}", e.reason),
                    None => e.reason,
                };
                (index, reason)
            })
            .collect()
    }
}

/// When a job runs by itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// Metronome's schedule id (`default` for Chronos's).
    pub id: String,
    pub kind: ScheduleKind,
    /// IANA name; `UTC` when not given.
    pub time_zone: String,
    /// How late a missed instant may still start (Metronome's `startingDeadlineSeconds`,
    /// Chronos's `epsilon`).
    pub starting_deadline_seconds: u64,
    pub concurrency: Concurrency,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ScheduleKind {
    /// `R[n]/<start>/<period>`.
    Iso8601(String),
    /// 5-field cron.
    Cron(String),
}

/// Why a run was started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Trigger {
    /// The scheduled instant it is for.
    Schedule { at_ms: u64 },
    /// Asked for (Chronos's PUT, Metronome's POST .../runs), with Chronos's `arguments`.
    Manual,
    /// Its parents succeeded (`workflow` is the run of the root that began the chain).
    Parents,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Decided; its attempt's task is not running yet (or waits for a retry).
    Starting,
    Active,
    Success,
    Failed,
}

/// One run of a job: attempts until one succeeds or the retries are spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRun {
    pub id: String,
    pub job_id: String,
    /// The run that began the chain this one belongs to (its own id for a root).
    pub workflow_id: String,
    pub trigger: Trigger,
    pub status: RunStatus,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_ms: Option<u64>,
    /// Its attempts' tasks, oldest first.
    #[serde(default)]
    pub task_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<String>,
    /// Asked to stop (a user, REPLACE, a job removed): ends Failed without retries.
    #[serde(default)]
    pub stop_requested: bool,
    /// When the waiting attempt may get its task (its start, or the end of the failed one
    /// before it plus the retry delay).
    #[serde(default)]
    pub ready_at_ms: u64,
    /// How its attempts' tasks ended, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ends: Vec<AttemptEnd>,
    /// The end of the last ended attempt's stdout and stderr (dropped from history older
    /// than `OUTPUTS_KEPT` runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<TaskOutput>,
}

/// How one attempt's task ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptEnd {
    pub task_id: String,
    pub agent_id: String,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    pub ended_ms: u64,
}

/// The delay before a retry: 1 s after the first failure, doubling, at most a minute.
pub const RETRY_BACKOFF: super::policy::Retry = super::policy::Retry {
    retries: 0,
    backoff_ms: 1_000,
    factor: 2.0,
    max_ms: 60_000,
};

/// Instants a job's schedule did not run, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    pub first_ms: u64,
    pub last_ms: u64,
    pub count: u64,
    pub reason: SkipReason,
}

/// Chronos's counters, `""` in its answers when never.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStats {
    pub success_count: u64,
    pub error_count: u64,
    pub last_success_ms: Option<u64>,
    pub last_error_ms: Option<u64>,
    pub errors_since_last_success: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    pub spec: JobSpec,
    pub created_ms: u64,
    pub version_ms: u64,
    /// Every scheduled instant up to here is decided (started or skipped).
    pub decided_through_ms: u64,
    pub stats: JobStats,
    /// When a run of it last started (a dependent job waits for its parents' successes
    /// after that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_started_ms: Option<u64>,
    /// Finished runs, oldest first.
    #[serde(default)]
    pub history: VecDeque<JobRun>,
    #[serde(default)]
    pub skipped: VecDeque<Skipped>,
}

impl JobRecord {
    /// The history within the job's retention at `at_ms` (its count, at most
    /// `HISTORY_KEPT`, and its age), and output only on the `OUTPUTS_KEPT` newest runs.
    /// Returns the bytes of output it dropped.
    fn trim_history(&mut self, at_ms: u64) -> u64 {
        let before: u64 = self.history.iter().map(|r| output_len(&r.output)).sum();
        while self.history.len() > self.spec.history_kept.min(HISTORY_KEPT) {
            self.history.pop_front();
        }
        if let Some(age) = self.spec.history_max_age_seconds {
            let oldest = at_ms.saturating_sub(age.saturating_mul(1_000));
            self.history
                .retain(|run| run.completed_ms.unwrap_or(at_ms) >= oldest);
        }
        let with_output = self.history.len().saturating_sub(OUTPUTS_KEPT);
        for run in self.history.iter_mut().take(with_output) {
            run.output = None;
        }
        let after: u64 = self.history.iter().map(|r| output_len(&r.output)).sum();
        before.saturating_sub(after)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobsState {
    pub jobs: BTreeMap<String, JobRecord>,
    /// Runs not finished, by id.
    pub runs: BTreeMap<String, JobRun>,
    /// Bytes of output the runs hold (at most about `OUTPUT_BUDGET_BYTES`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl JobsState {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.runs.is_empty()
    }

    /// A task of a run may be recorded only for a run waiting for its attempt's task.
    pub(crate) fn check_launch(&self, job_id: &str, run_id: &str) -> Result<(), Reject> {
        match self.runs.get(run_id) {
            Some(run) if run.job_id != job_id => Err(Reject::UnknownRun {
                run_id: run_id.to_string(),
            }),
            None => Err(Reject::UnknownRun {
                run_id: run_id.to_string(),
            }),
            Some(run) if run.status != RunStatus::Starting || run.stop_requested => {
                Err(Reject::RunHasTask {
                    run_id: run_id.to_string(),
                })
            }
            Some(_) => Ok(()),
        }
    }

    /// A run's attempt got its task (recorded after `check_launch`).
    pub(crate) fn task_launched(&mut self, task: &Task) {
        if let TaskOwner::JobRun { run_id, .. } = &task.owner {
            if let Some(run) = self.runs.get_mut(run_id) {
                run.task_ids.push(task.id.clone());
                run.status = RunStatus::Active;
            }
        }
    }

    /// A run's task changed state: an end of the current attempt's task ends the attempt
    /// (`attempt_ended`: FINISHED is a success, any other end a failure). Ends of earlier
    /// attempts' tasks change nothing. The end is recorded on the run, with `output`.
    pub(crate) fn task_changed(&mut self, task: &Task, at_ms: u64, output: Option<&TaskOutput>) {
        let TaskOwner::JobRun { run_id, .. } = &task.owner else {
            return;
        };
        let current = self
            .runs
            .get(run_id)
            .is_some_and(|r| r.status == RunStatus::Active && r.task_ids.last() == Some(&task.id));
        if current && task.state.is_terminal() {
            if let Some(run) = self.runs.get_mut(run_id) {
                run.ends.push(AttemptEnd {
                    task_id: task.id.clone(),
                    agent_id: task.agent_id.clone(),
                    state: task.state,
                    exit_code: task.exit_code,
                    message: task.message.clone(),
                    started_ms: task.started_at_ms,
                    ended_ms: at_ms,
                });
                // The run shows its last attempt's output, none if that attempt sent none.
                let new = output.cloned();
                self.output_bytes = self
                    .output_bytes
                    .saturating_sub(output_len(&run.output))
                    .saturating_add(output_len(&new));
                run.output = new;
            }
            self.attempt_ended(run_id, task.state == TaskState::Finished, at_ms);
        }
    }

    /// `StopRun`: the run ends failed without retries once its task ended (or at once when
    /// it has none live); its live tasks, to be killed, are returned.
    pub(crate) fn stop_run(&mut self, run_id: &str, at_ms: u64) -> Result<Vec<String>, Reject> {
        let run = self
            .runs
            .get_mut(run_id)
            .ok_or_else(|| Reject::UnknownRun {
                run_id: run_id.to_string(),
            })?;
        run.stop_requested = true;
        if run.status == RunStatus::Starting {
            self.attempt_ended(run_id, false, at_ms);
            return Ok(Vec::new());
        }
        Ok(run.task_ids.last().cloned().into_iter().collect())
    }

    /// `MarkJobSuccess`: a success of `job_id` now, counted as a run's would be.
    pub(crate) fn mark_success(&mut self, job_id: &str, at_ms: u64) -> Result<(), Reject> {
        let stats = &mut self.job_mut(job_id)?.stats;
        stats.success_count += 1;
        stats.last_success_ms = Some(at_ms);
        stats.errors_since_last_success = 0;
        Ok(())
    }

    fn job_mut(&mut self, job_id: &str) -> Result<&mut JobRecord, Reject> {
        self.jobs.get_mut(job_id).ok_or_else(|| Reject::UnknownJob {
            job_id: job_id.to_string(),
        })
    }

    /// Every job's runs not finished, oldest first, in one pass (for views of all jobs).
    pub fn active_by_job(&self) -> BTreeMap<&str, Vec<&JobRun>> {
        let mut by_job: BTreeMap<&str, Vec<&JobRun>> = BTreeMap::new();
        for run in self.runs.values() {
            by_job.entry(run.job_id.as_str()).or_default().push(run);
        }
        for runs in by_job.values_mut() {
            runs.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        }
        by_job
    }

    /// The runs of `job_id` not finished, oldest first.
    pub fn active_runs(&self, job_id: &str) -> Vec<&JobRun> {
        let mut runs: Vec<&JobRun> = self.runs.values().filter(|r| r.job_id == job_id).collect();
        runs.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        runs
    }

    /// `PutJob`: create (refused if the id exists) or replace a job's definition; its
    /// counts, history and cursor stay. A new job's cursor starts at `at_ms`: it runs from
    /// its next instant on, never for instants before it existed.
    pub(crate) fn put_job(
        &mut self,
        spec: &JobSpec,
        create: bool,
        at_ms: u64,
    ) -> Result<(), Reject> {
        if spec.retries > RETRIES_MAX {
            return Err(Reject::RunNotDue {
                job_id: spec.id.clone(),
                reason: format!("at most {RETRIES_MAX} retries"),
            });
        }
        match self.jobs.get_mut(&spec.id) {
            Some(_) if create => Err(Reject::JobExists {
                job_id: spec.id.clone(),
            }),
            Some(record) => {
                // A new schedule (another expression or time zone) starts from now: no run
                // for the instants of before. Other changes (concurrency, window) keep the
                // cursor, and a disabled job's instants are skipped as they come.
                let when = |s: &Option<ScheduleSpec>| {
                    s.as_ref().map(|s| (s.kind.clone(), s.time_zone.clone()))
                };
                if when(&record.spec.schedule) != when(&spec.schedule) {
                    record.decided_through_ms = record.decided_through_ms.max(at_ms);
                }
                record.spec = spec.clone();
                // Strictly later than the version replaced, so a conditional change read
                // off that one is refused even within the same millisecond.
                record.version_ms = at_ms.max(record.version_ms + 1);
                let freed = record.trim_history(at_ms);
                self.output_bytes = self.output_bytes.saturating_sub(freed);
                Ok(())
            }
            None => {
                self.jobs.insert(
                    spec.id.clone(),
                    JobRecord {
                        spec: spec.clone(),
                        created_ms: at_ms,
                        version_ms: at_ms,
                        decided_through_ms: at_ms,
                        stats: JobStats::default(),
                        last_started_ms: None,
                        history: VecDeque::new(),
                        skipped: VecDeque::new(),
                    },
                );
                Ok(())
            }
        }
    }

    /// `RemoveJob`: a job with unfinished runs goes only with `stop_runs` (its runs are
    /// asked to stop and forgotten; their tasks are killed by the caller); a job others
    /// name as parent is refused.
    pub(crate) fn remove_job(
        &mut self,
        job_id: &str,
        stop_runs: bool,
    ) -> Result<Vec<String>, Reject> {
        if !self.jobs.contains_key(job_id) {
            return Err(Reject::UnknownJob {
                job_id: job_id.to_string(),
            });
        }
        if let Some(child) = self
            .jobs
            .values()
            .find(|j| j.spec.parents.iter().any(|p| p == job_id))
        {
            return Err(Reject::JobIsParent {
                job_id: job_id.to_string(),
                child: child.spec.id.clone(),
            });
        }
        let active: Vec<String> = self
            .active_runs(job_id)
            .iter()
            .map(|r| r.id.clone())
            .collect();
        if !active.is_empty() && !stop_runs {
            return Err(Reject::JobRunsActive {
                job_id: job_id.to_string(),
                runs: active,
            });
        }
        let removed: Vec<JobRun> = active
            .iter()
            .filter_map(|id| self.runs.remove(id))
            .collect();
        let mut freed: u64 = removed.iter().map(|r| output_len(&r.output)).sum();
        let tasks = removed.into_iter().flat_map(|run| run.task_ids).collect();
        if let Some(job) = self.jobs.remove(job_id) {
            freed += job
                .history
                .iter()
                .map(|r| output_len(&r.output))
                .sum::<u64>();
        }
        self.output_bytes = self.output_bytes.saturating_sub(freed);
        Ok(tasks)
    }

    /// `StartRun`: a new run of `job_id`. A scheduled one (`Trigger::Schedule`) must be for
    /// an instant after the job's cursor, which moves to it: the same instant twice (a new
    /// leader proposing what the old one had) is refused.
    pub(crate) fn start_run(
        &mut self,
        job_id: &str,
        run_id: &str,
        workflow_id: &str,
        trigger: &Trigger,
        arguments: &[String],
        at_ms: u64,
    ) -> Result<(), Reject> {
        if self.runs.contains_key(run_id) {
            return Err(Reject::RunExists {
                run_id: run_id.to_string(),
            });
        }
        if *trigger == Trigger::Parents {
            // Decided again by a new leader, or late: the parents' successes since the
            // job last started are what it consumes, once.
            let record = self.jobs.get(job_id).ok_or_else(|| Reject::UnknownJob {
                job_id: job_id.to_string(),
            })?;
            let last_success =
                |parent: &str| self.jobs.get(parent).and_then(|p| p.stats.last_success_ms);
            if !super::dag::ready(&record.spec.parents, record.last_started_ms, &last_success) {
                return Err(Reject::RunNotDue {
                    job_id: job_id.to_string(),
                    reason: "its parents have not all succeeded since it last started".into(),
                });
            }
        }
        if *trigger == Trigger::Manual && workflow_id != run_id {
            // A step of a workflow run again (its succeeded parents are not): the job must
            // have run in that workflow.
            let record = self.jobs.get(job_id).ok_or_else(|| Reject::UnknownJob {
                job_id: job_id.to_string(),
            })?;
            if !record.history.iter().any(|r| r.workflow_id == workflow_id) {
                return Err(Reject::RunNotDue {
                    job_id: job_id.to_string(),
                    reason: format!("it has no finished run in workflow {workflow_id}"),
                });
            }
        }
        let record = self.job_mut(job_id)?;
        if let Trigger::Schedule { at_ms: instant } = trigger {
            if record.spec.schedule.is_none() || *instant > at_ms {
                return Err(Reject::RunNotDue {
                    job_id: job_id.to_string(),
                    reason: format!(
                        "a scheduled run for {instant} at {at_ms}: not a due instant of its schedule"
                    ),
                });
            }
            if *instant <= record.decided_through_ms {
                return Err(Reject::InstantDecided {
                    job_id: job_id.to_string(),
                    instant_ms: *instant,
                    through_ms: record.decided_through_ms,
                });
            }
            record.decided_through_ms = *instant;
        }
        record.last_started_ms = Some(at_ms);
        self.runs.insert(
            run_id.to_string(),
            JobRun {
                id: run_id.to_string(),
                job_id: job_id.to_string(),
                workflow_id: workflow_id.to_string(),
                trigger: trigger.clone(),
                status: RunStatus::Starting,
                attempt: 1,
                created_ms: at_ms,
                completed_ms: None,
                task_ids: Vec::new(),
                arguments: arguments.to_vec(),
                stop_requested: false,
                ready_at_ms: at_ms,
                ends: Vec::new(),
                output: None,
            },
        );
        Ok(())
    }

    /// `SkipRuns`: the scheduled instants of `job_id` from `first_ms` through `last_ms`
    /// (`count` of them) will not run, for `reason`; the cursor moves past them.
    pub(crate) fn skip(
        &mut self,
        job_id: &str,
        first_ms: u64,
        last_ms: u64,
        count: u64,
        reason: &SkipReason,
    ) -> Result<(), Reject> {
        let record = self.job_mut(job_id)?;
        if last_ms < first_ms || count == 0 {
            return Err(Reject::RunNotDue {
                job_id: job_id.to_string(),
                reason: format!("an empty range of instants ({first_ms}..={last_ms}, {count})"),
            });
        }
        if first_ms <= record.decided_through_ms {
            return Err(Reject::InstantDecided {
                job_id: job_id.to_string(),
                instant_ms: first_ms,
                through_ms: record.decided_through_ms,
            });
        }
        record.decided_through_ms = last_ms;
        record.skipped.push_back(Skipped {
            first_ms,
            last_ms,
            count,
            reason: reason.clone(),
        });
        while record.skipped.len() > SKIPS_KEPT {
            record.skipped.pop_front();
        }
        Ok(())
    }

    /// A run's attempt ended: success ends the run; a failure starts the next attempt
    /// (`Starting`, attempt + 1) while retries are left and no stop was asked, else ends
    /// the run failed. Finished runs go to the job's history and its counts (a soft error
    /// counts as neither).
    pub(crate) fn attempt_ended(&mut self, run_id: &str, succeeded: bool, at_ms: u64) {
        let Some(run) = self.runs.get_mut(run_id) else {
            return;
        };
        let retries = self.jobs.get(&run.job_id).map_or(0, |j| j.spec.retries);
        if !succeeded && !run.stop_requested && run.attempt <= retries {
            let retry = super::policy::Retry {
                retries,
                ..RETRY_BACKOFF
            };
            run.ready_at_ms = retry.next_attempt_at(run.attempt, at_ms).unwrap_or(at_ms);
            run.attempt += 1;
            run.status = RunStatus::Starting;
            return;
        }
        let Some(mut run) = self.runs.remove(run_id) else {
            return;
        };
        run.status = if succeeded {
            RunStatus::Success
        } else {
            RunStatus::Failed
        };
        run.completed_ms = Some(at_ms);
        let Some(job) = self.jobs.get_mut(&run.job_id) else {
            return;
        };
        let stats = &mut job.stats;
        if succeeded {
            stats.success_count += 1;
            stats.last_success_ms = Some(at_ms);
            stats.errors_since_last_success = 0;
        } else if !job.spec.soft_error {
            stats.error_count += 1;
            stats.last_error_ms = Some(at_ms);
            stats.errors_since_last_success += 1;
        }
        job.history.push_back(run);
        let freed = job.trim_history(at_ms);
        self.output_bytes = self.output_bytes.saturating_sub(freed);
        if self.output_bytes > OUTPUT_BUDGET_BYTES {
            self.drop_oldest_outputs(OUTPUT_BUDGET_BYTES / 8 * 7);
        }
    }

    /// Drops the output of finished runs, oldest first, until at most `keep` bytes are held.
    fn drop_oldest_outputs(&mut self, keep: u64) {
        let mut held: Vec<(u64, String, usize)> = self
            .jobs
            .iter()
            .flat_map(|(id, job)| {
                job.history
                    .iter()
                    .enumerate()
                    .filter(|(_, run)| run.output.is_some())
                    .map(move |(i, run)| (run.completed_ms.unwrap_or(0), id.clone(), i))
            })
            .collect();
        held.sort();
        for (_, job_id, i) in held {
            if self.output_bytes <= keep {
                break;
            }
            if let Some(run) = self
                .jobs
                .get_mut(&job_id)
                .and_then(|job| job.history.get_mut(i))
            {
                self.output_bytes = self.output_bytes.saturating_sub(output_len(&run.output));
                run.output = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> JobSpec {
        JobSpec {
            id: id.into(),
            description: String::new(),
            labels: BTreeMap::new(),
            run: RunSpec {
                cmd: Some("true".into()),
                args: None,
                cpus: 0.1,
                mem: 32.0,
                disk: 0.0,
                env: BTreeMap::new(),
                image: None,
                user: None,
                max_duration_seconds: None,
                constraints: Vec::new(),
                fetch: Vec::new(),
            },
            schedule: Some(ScheduleSpec {
                id: "default".into(),
                kind: ScheduleKind::Iso8601("R/2026-01-01T00:00:00Z/PT2S".into()),
                time_zone: "UTC".into(),
                starting_deadline_seconds: 60,
                concurrency: Concurrency::Allow,
                enabled: true,
            }),
            parents: Vec::new(),
            retries: 0,
            soft_error: false,
            disabled: false,
            history_kept: HISTORY_KEPT,
            history_max_age_seconds: None,
            kept: BTreeMap::new(),
        }
    }

    fn scheduled(at_ms: u64) -> Trigger {
        Trigger::Schedule { at_ms }
    }

    #[test]
    fn a_scheduled_instant_is_decided_once() {
        let mut s = JobsState::default();
        s.put_job(&job("tick"), true, 1_000).unwrap();
        assert_eq!(
            s.put_job(&job("tick"), true, 1_001),
            Err(Reject::JobExists {
                job_id: "tick".into()
            })
        );
        // Before the job existed: never.
        assert!(matches!(
            s.start_run("tick", "r0", "r0", &scheduled(1_000), &[], 1_000),
            Err(Reject::InstantDecided { .. })
        ));
        s.start_run("tick", "r1", "r1", &scheduled(2_000), &[], 2_010)
            .unwrap();
        // The same instant from a new leader (another run id): refused, nothing changes.
        let before = s.clone();
        assert_eq!(
            s.start_run("tick", "r1b", "r1b", &scheduled(2_000), &[], 2_500),
            Err(Reject::InstantDecided {
                job_id: "tick".into(),
                instant_ms: 2_000,
                through_ms: 2_000
            })
        );
        assert_eq!(s, before);
        // Skipped instants move the cursor too, and are kept with their reason.
        let missed = SkipReason::Missed {
            late_ms: 90_000,
            window_ms: 60_000,
        };
        s.skip("tick", 4_000, 8_000, 3, &missed).unwrap();
        assert!(s.skip("tick", 8_000, 9_000, 1, &missed).is_err());
        assert!(s
            .start_run("tick", "r2", "r2", &scheduled(6_000), &[], 9_000)
            .is_err());
        s.start_run("tick", "r3", "r3", &scheduled(10_000), &[], 10_000)
            .unwrap();
        assert_eq!(s.jobs["tick"].skipped[0].count, 3);
        // Manual runs need no instant and move nothing.
        s.start_run(
            "tick",
            "m1",
            "m1",
            &Trigger::Manual,
            &["--now".into()],
            10_500,
        )
        .unwrap();
        assert_eq!(s.jobs["tick"].decided_through_ms, 10_000);
        assert_eq!(
            s.active_runs("tick")
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>(),
            ["r1", "r3", "m1"]
        );
    }

    #[test]
    fn attempts_retry_then_the_run_ends_in_the_history_and_counts() {
        let mut s = JobsState::default();
        let mut spec = job("flaky");
        spec.retries = 2;
        s.put_job(&spec, true, 0).unwrap();
        s.start_run("flaky", "r", "r", &Trigger::Manual, &[], 1)
            .unwrap();
        s.attempt_ended("r", false, 10);
        assert_eq!(
            (s.runs["r"].attempt, s.runs["r"].status),
            (2, RunStatus::Starting)
        );
        s.attempt_ended("r", false, 20);
        s.attempt_ended("r", false, 30);
        assert!(s.runs.is_empty(), "2 retries spent");
        let record = &s.jobs["flaky"];
        assert_eq!(record.history[0].status, RunStatus::Failed);
        assert_eq!(
            (
                record.stats.error_count,
                record.stats.last_error_ms,
                record.stats.errors_since_last_success
            ),
            (1, Some(30), 1)
        );
        s.start_run("flaky", "ok", "ok", &Trigger::Manual, &[], 40)
            .unwrap();
        s.attempt_ended("ok", true, 50);
        let stats = &s.jobs["flaky"].stats;
        assert_eq!(
            (
                stats.success_count,
                stats.last_success_ms,
                stats.errors_since_last_success
            ),
            (1, Some(50), 0)
        );
        // A stopped run is not retried; a soft error is not counted.
        let mut soft = job("soft");
        soft.retries = 5;
        soft.soft_error = true;
        s.put_job(&soft, true, 0).unwrap();
        s.start_run("soft", "x", "x", &Trigger::Manual, &[], 1)
            .unwrap();
        s.runs.get_mut("x").unwrap().stop_requested = true;
        s.attempt_ended("x", false, 2);
        assert!(s.runs.is_empty());
        assert_eq!(s.jobs["soft"].stats, JobStats::default());
    }

    #[test]
    fn a_step_runs_again_only_in_a_workflow_it_ran_in_and_a_marked_success_counts() {
        let mut s = JobsState::default();
        s.put_job(&job("load"), true, 0).unwrap();
        let rerun = |s: &mut JobsState, workflow: &str| {
            s.start_run("load", "again", workflow, &Trigger::Manual, &[], 10)
        };
        assert!(matches!(
            rerun(&mut s, "w1"),
            Err(Reject::RunNotDue { reason, .. }) if reason.contains("no finished run in workflow w1")
        ));
        s.start_run("load", "w1", "w1", &Trigger::Manual, &[], 1)
            .unwrap();
        s.attempt_ended("w1", false, 2);
        rerun(&mut s, "w1").unwrap();
        assert_eq!(s.runs["again"].workflow_id, "w1");
        s.mark_success("load", 20).unwrap();
        let stats = &s.jobs["load"].stats;
        assert_eq!(
            (
                stats.success_count,
                stats.last_success_ms,
                stats.errors_since_last_success
            ),
            (1, Some(20), 0)
        );
        assert_eq!(
            s.mark_success("nope", 20),
            Err(Reject::UnknownJob {
                job_id: "nope".into()
            })
        );
    }

    #[test]
    fn a_conditional_replace_is_refused_after_another_change_even_in_the_same_millisecond() {
        use crate::command::{Command, Outcome};
        let mut c = crate::state::ClusterState::default();
        let put = |create: bool, at_ms: u64, if_version_ms: Option<u64>| Command::PutJob {
            job: job("etl"),
            create,
            at_ms,
            if_version_ms,
        };
        assert_eq!(c.apply(&put(true, 100, None)), Outcome::Applied);
        let read = c.jobs.jobs["etl"].version_ms;
        // Another writer replaces it within the same millisecond.
        assert_eq!(c.apply(&put(false, 100, Some(read))), Outcome::Applied);
        assert!(c.jobs.jobs["etl"].version_ms > read);
        assert_eq!(
            c.apply(&put(false, 100, Some(read))),
            Outcome::Rejected(Reject::JobChanged {
                job_id: "etl".into()
            })
        );
        let unknown = Command::PutJob {
            job: job("nope"),
            create: false,
            at_ms: 100,
            if_version_ms: Some(100),
        };
        assert_eq!(
            c.apply(&unknown),
            Outcome::Rejected(Reject::JobChanged {
                job_id: "nope".into()
            })
        );
    }

    #[test]
    fn past_the_budget_the_oldest_outputs_go_first_and_the_count_follows() {
        let mut s = JobsState::default();
        s.put_job(&job("a"), true, 0).unwrap();
        s.put_job(&job("b"), true, 0).unwrap();
        for (i, job_id) in ["a", "b", "a", "b"].iter().enumerate() {
            let id = format!("r{i}");
            s.start_run(job_id, &id, &id, &Trigger::Manual, &[], i as u64)
                .unwrap();
            let run = s.runs.get_mut(&id).unwrap();
            run.output = Some(TaskOutput {
                stdout: "x".repeat(100),
                stderr: String::new(),
            });
            s.output_bytes += 100;
            s.attempt_ended(&id, true, 10 + i as u64);
        }
        assert_eq!(s.output_bytes, 400);
        s.drop_oldest_outputs(250);
        let kept: Vec<&str> = s
            .jobs
            .values()
            .flat_map(|j| j.history.iter())
            .filter(|r| r.output.is_some())
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(kept, ["r2", "r3"]);
        assert_eq!(s.output_bytes, 200);
        s.remove_job("a", false).unwrap();
        assert_eq!(s.output_bytes, 100, "a's r2 went with it");
    }

    #[test]
    fn a_runs_output_is_bounded_together_keeping_each_streams_end() {
        let max = crate::types::OUTPUT_TAIL_MAX_BYTES;
        let both = TaskOutput {
            stdout: "o".repeat(100_000) + "END",
            stderr: "e".repeat(100_000) + "ERR",
        }
        .bounded();
        assert_eq!((both.stdout.len(), both.stderr.len()), (max / 2, max / 2));
        assert!(both.stdout.ends_with("END") && both.stderr.ends_with("ERR"));
        let little_err = TaskOutput {
            stdout: "o".repeat(100_000),
            stderr: "oops".into(),
        }
        .bounded();
        assert_eq!(little_err.stderr, "oops");
        assert_eq!(little_err.len(), max);
        let small = TaskOutput {
            stdout: "é".repeat(10),
            stderr: String::new(),
        };
        assert_eq!(small.clone().bounded(), small);
    }

    #[test]
    fn history_is_bounded_per_job() {
        let mut s = JobsState::default();
        let mut spec = job("short");
        spec.history_kept = 3;
        s.put_job(&spec, true, 0).unwrap();
        for i in 0..5u64 {
            let id = format!("r{i}");
            s.start_run("short", &id, &id, &Trigger::Manual, &[], i)
                .unwrap();
            s.attempt_ended(&id, true, i);
        }
        let kept: Vec<&str> = s.jobs["short"]
            .history
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(kept, ["r2", "r3", "r4"]);
        assert_eq!(s.jobs["short"].stats.success_count, 5);
    }

    #[test]
    fn history_is_bounded_by_age_and_only_the_newest_runs_keep_their_output() {
        let mut s = JobsState::default();
        let mut spec = job("old");
        spec.history_max_age_seconds = Some(60);
        s.put_job(&spec, true, 0).unwrap();
        let output = TaskOutput {
            stdout: "out".into(),
            stderr: String::new(),
        };
        // One run a second for 70 s: the ten newest keep their output, those finished more
        // than 60 s before the last are gone.
        for i in 0..=70u64 {
            let id = format!("r{i:02}");
            s.start_run("old", &id, &id, &Trigger::Manual, &[], i * 1_000)
                .unwrap();
            s.runs.get_mut(&id).unwrap().output = Some(output.clone());
            s.attempt_ended(&id, true, i * 1_000);
        }
        let history = &s.jobs["old"].history;
        assert_eq!(history.front().unwrap().id, "r10");
        assert_eq!(history.len(), 61);
        let with_output: Vec<&str> = history
            .iter()
            .filter(|r| r.output.is_some())
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(with_output.len(), OUTPUTS_KEPT);
        assert_eq!(with_output.first(), Some(&"r61"));
    }

    #[test]
    fn a_job_goes_only_without_children_and_with_its_runs_stopped() {
        let mut s = JobsState::default();
        s.put_job(&job("parent"), true, 0).unwrap();
        let mut child = job("child");
        child.schedule = None;
        child.parents = vec!["parent".into()];
        s.put_job(&child, true, 0).unwrap();
        assert_eq!(
            s.remove_job("parent", true),
            Err(Reject::JobIsParent {
                job_id: "parent".into(),
                child: "child".into()
            })
        );
        s.start_run("child", "c1", "c1", &Trigger::Manual, &[], 5)
            .unwrap();
        s.runs.get_mut("c1").unwrap().task_ids.push("t1".into());
        assert_eq!(
            s.remove_job("child", false),
            Err(Reject::JobRunsActive {
                job_id: "child".into(),
                runs: vec!["c1".into()]
            })
        );
        assert_eq!(s.remove_job("child", true), Ok(vec!["t1".to_string()]));
        assert!(s.runs.is_empty() && !s.jobs.contains_key("child"));
        assert_eq!(
            s.remove_job("child", true),
            Err(Reject::UnknownJob {
                job_id: "child".into()
            })
        );
        s.remove_job("parent", false).unwrap();
    }

    /// Through the replicated state: a run's tasks, retries, a stale end, a stop.
    #[test]
    fn a_runs_tasks_end_its_attempts_in_the_cluster_state() {
        use crate::command::{Command, Outcome};
        use crate::state::tests::{agent, task};
        use crate::state::ClusterState;
        let mut c = ClusterState::default();
        c.apply(&Command::RegisterAgent {
            agent: agent("a1", 4000, 4096),
        });
        let mut spec = job("etl");
        spec.retries = 1;
        let run_task = |id: &str, run: &str| {
            let mut t = task(id, "/none", "a1", 1);
            t.owner = TaskOwner::JobRun {
                job_id: "etl".into(),
                run_id: run.into(),
            };
            t
        };
        let status = |id: &str, state: TaskState, at_ms: u64| Command::TaskStatus {
            task_id: id.into(),
            state,
            at_ms,
            message: None,
            exit_code: None,
            output: None,
        };
        let launch = |t: Task| Command::LaunchTask { task: t };
        assert_eq!(
            c.apply(&launch(run_task("t0", "r1"))),
            Outcome::Rejected(Reject::UnknownRun {
                run_id: "r1".into()
            }),
            "no task without its run"
        );
        for command in [
            Command::PutJob {
                job: spec,
                create: true,
                at_ms: 0,
                if_version_ms: None,
            },
            Command::StartRun {
                job_id: "etl".into(),
                run_id: "r1".into(),
                workflow_id: "r1".into(),
                trigger: Trigger::Manual,
                arguments: vec![],
                at_ms: 1,
            },
            launch(run_task("t1", "r1")),
            status("t1", TaskState::Running, 2),
        ] {
            assert_eq!(c.apply(&command), Outcome::Applied, "{command:?}");
        }
        assert_eq!(c.jobs.runs["r1"].status, RunStatus::Active);
        assert_eq!(
            c.apply(&launch(run_task("t1b", "r1"))),
            Outcome::Rejected(Reject::RunHasTask {
                run_id: "r1".into()
            }),
            "one task per attempt"
        );
        // The first attempt fails: the second waits for its task.
        c.apply(&status("t1", TaskState::Failed, 3));
        assert_eq!(
            (c.jobs.runs["r1"].attempt, c.jobs.runs["r1"].status),
            (2, RunStatus::Starting)
        );
        assert_eq!(c.apply(&launch(run_task("t2", "r1"))), Outcome::Applied);
        // A late report of the first attempt's task changes nothing.
        c.apply(&status("t1", TaskState::Killed, 4));
        assert_eq!(c.jobs.runs["r1"].attempt, 2);
        c.apply(&status("t2", TaskState::Finished, 5));
        assert!(c.jobs.runs.is_empty());
        let record = &c.jobs.jobs["etl"];
        assert_eq!(record.history[0].task_ids, vec!["t1", "t2"]);
        assert_eq!(
            (record.stats.success_count, record.stats.last_success_ms),
            (1, Some(5))
        );

        // A stopped run: its task is asked to die, and its end is a failure, not retried.
        c.apply(&Command::StartRun {
            job_id: "etl".into(),
            run_id: "r2".into(),
            workflow_id: "r2".into(),
            trigger: Trigger::Manual,
            arguments: vec![],
            at_ms: 10,
        });
        c.apply(&launch(run_task("t3", "r2")));
        assert_eq!(
            c.apply(&Command::StopRun {
                run_id: "r2".into(),
                at_ms: 11
            }),
            Outcome::Applied
        );
        assert!(c.tasks["t3"].kill_requested);
        c.apply(&status("t3", TaskState::Killed, 12));
        assert!(c.jobs.runs.is_empty());
        assert_eq!(c.jobs.jobs["etl"].history[1].status, RunStatus::Failed);
        // The state round-trips as a snapshot, and a cluster without jobs writes none.
        let again: ClusterState =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        let empty = serde_json::to_value(ClusterState::default()).unwrap();
        assert!(empty.get("jobs").is_none());
    }

    #[test]
    fn a_dependent_or_scheduled_start_is_refused_when_not_due() {
        let mut s = JobsState::default();
        s.put_job(&job("parent"), true, 0).unwrap();
        let mut child = job("child");
        child.schedule = None;
        child.parents = vec!["parent".into()];
        s.put_job(&child, true, 0).unwrap();
        let start = |s: &mut JobsState, id: &str, trigger: Trigger, at_ms| {
            s.start_run("child", id, id, &trigger, &[], at_ms)
        };
        assert!(matches!(
            start(&mut s, "c0", Trigger::Parents, 5),
            Err(Reject::RunNotDue { .. })
        ));
        s.start_run("parent", "p1", "p1", &Trigger::Manual, &[], 6)
            .unwrap();
        s.attempt_ended("p1", true, 7);
        start(&mut s, "c1", Trigger::Parents, 8).unwrap();
        // The same decision again (a new leader): the success is consumed.
        assert!(matches!(
            start(&mut s, "c2", Trigger::Parents, 9),
            Err(Reject::RunNotDue { .. })
        ));
        // A scheduled start for a job without a schedule, or for an instant to come.
        assert!(matches!(
            start(&mut s, "c3", scheduled(5), 10),
            Err(Reject::RunNotDue { .. })
        ));
        assert!(matches!(
            s.start_run("parent", "p2", "p2", &scheduled(50_000), &[], 10),
            Err(Reject::RunNotDue { .. })
        ));
        let mut greedy = job("greedy");
        greedy.retries = RETRIES_MAX + 1;
        assert!(s.put_job(&greedy, true, 0).is_err());
    }

    #[test]
    fn a_changed_schedule_starts_from_the_change() {
        let mut s = JobsState::default();
        s.put_job(&job("j"), true, 1_000).unwrap();
        let mut cron = job("j");
        cron.schedule.as_mut().unwrap().kind = ScheduleKind::Cron("* * * * *".into());
        s.put_job(&cron, false, 50_000).unwrap();
        assert_eq!(s.jobs["j"].decided_through_ms, 50_000);
        // The same schedule again, or another policy, moves nothing.
        s.put_job(&cron, false, 90_000).unwrap();
        cron.schedule.as_mut().unwrap().concurrency = Concurrency::Forbid;
        s.put_job(&cron, false, 95_000).unwrap();
        assert_eq!(s.jobs["j"].decided_through_ms, 50_000);
    }
}
