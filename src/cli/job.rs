//! `dcos-rs job`: scheduled and on-demand jobs (the jobs framework), through Metronome's
//! API (`/v1/jobs`), Chronos's for jobs written in its format, and ours
//! (`/cluster/v1/jobs`) for schedules in words, runs with their output, and workflows.

use super::{print_json, print_table, row};
use crate::cli::client::{Client, ClientError};
use anyhow::Context;
use clap::Subcommand;
use dcos_api::routes::cluster as cluster_routes;
use dcos_core::jobs::describe::wall_clock;
use hyper::Method;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Create a job from a JSON file (`-` reads stdin), in Metronome's or Chronos's format.
    ///
    /// Metronome's: {"id": "nightly.report", "run": {"cmd": "...", "cpus": 0.1, "mem": 64,
    /// "disk": 0}, "schedules": [{"id": "default", "cron": "30 2 * * *", "timezone":
    /// "Europe/Berlin", "concurrencyPolicy": "FORBID"}]} (see examples/job.json).
    /// Chronos's: {"name": "report", "command": "...", "schedule": "R/2026-01-01T02:30:00Z/P1D",
    /// "epsilon": "PT60S", "cpus": 0.1, "mem": 64, "owner": "me@example.com"}, or with
    /// "parents": ["extract"] instead of a schedule to run after other jobs.
    Add { file: PathBuf },
    /// Replace a job's definition from a JSON file (same formats as `add`); its runs and
    /// history stay. A Metronome job's schedule in the file is written too (replaced, or
    /// added when the job has none); without one in the file the job keeps its own.
    Update { file: PathBuf },
    /// List jobs: the schedule in plain words, the next run in this machine's time zone
    /// (TZ, else /etc/localtime), the last run.
    List,
    /// Show a job: its definition, schedule, next run and runs (JSON).
    Show { id: String },
    /// Start a run now (besides its schedule); prints the run's id.
    Run {
        id: String,
        /// Run a failed step of a workflow again: the job runs in the workflow of its run
        /// RUN (see `job history`), and the jobs after it continue that workflow when it
        /// succeeds; the parents that succeeded do not run again.
        #[arg(long, value_name = "RUN")]
        rerun: Option<String>,
    },
    /// Stop a job's runs under way (or only RUN): their tasks are killed, they end failed.
    Kill { id: String, run: Option<String> },
    /// Remove a job; with --stop-runs also when runs are under way (they are stopped).
    Remove {
        id: String,
        #[arg(long)]
        stop_runs: bool,
    },
    /// A job's runs grouped by workflow run (a scheduled root and the runs of the jobs
    /// after it that it set off), with each run's trigger, attempts and exit code.
    History { id: String },
    /// A run's output (default: the latest run): stdout, or stderr with --stderr. A
    /// finished run's is the end its history kept (64 KiB); a run under way's is read from
    /// its task, --follow until it ends.
    Logs {
        id: String,
        run: Option<String>,
        #[arg(long)]
        stderr: bool,
        #[arg(long, short)]
        follow: bool,
    },
    /// How much of a job's history is kept: its newest RUNS runs (1-100; 100 unless set)
    /// and, with --max-age, only those that ended within that age (7d, 12h, 30m, 90s).
    Retention {
        id: String,
        #[arg(long, value_name = "RUNS")]
        runs: u64,
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        max_age: Option<u64>,
    },
    /// The jobs' dependency graph: each job with the jobs that run after it, as an indented
    /// tree, or Graphviz DOT with --dot.
    Graph {
        #[arg(long)]
        dot: bool,
    },
}

/// `7d`, `12h`, `30m`, `90s` or a number of seconds, as seconds.
fn parse_age(text: &str) -> Result<u64, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not an age such as 7d, 12h, 30m or 90s"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    Ok(n.saturating_mul(unit))
}

fn read_job(file: &std::path::Path) -> anyhow::Result<serde_json::Map<String, Value>> {
    let bytes = if file.as_os_str() == "-" {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut s).context("reading stdin")?;
        s
    } else {
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))?
    };
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(job)) => Ok(job),
        Ok(_) => anyhow::bail!("{}: a job is a JSON object", file.display()),
        Err(e) => anyhow::bail!("{}: not JSON: {e}", file.display()),
    }
}

/// Chronos's format names the job `name`; Metronome's has `id` and `run`.
fn is_chronos(job: &serde_json::Map<String, Value>) -> bool {
    job.contains_key("name") && !job.contains_key("run")
}

/// Writes a Chronos job (create or replace): `/iso8601` with a schedule, else
/// `/dependency`.
async fn put_chronos(client: &Client, job: &serde_json::Map<String, Value>) -> anyhow::Result<()> {
    let path = match job.contains_key("parents") {
        true => "/v1/scheduler/dependency",
        false => "/v1/scheduler/iso8601",
    };
    let body = serde_json::to_vec(job)?;
    client.send_text(Method::POST, path, Some(&body)).await?;
    Ok(())
}

fn job_id(job: &serde_json::Map<String, Value>) -> anyhow::Result<String> {
    let key = if is_chronos(job) { "name" } else { "id" };
    job.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("the job has no {key:?}"))
}

/// This machine's time zone: TZ, else where /etc/localtime points, else UTC.
fn local_zone() -> String {
    if let Ok(tz) = std::env::var("TZ") {
        let tz = tz.trim_start_matches(':');
        if !tz.is_empty() {
            return tz.to_string();
        }
    }
    std::fs::read_link("/etc/localtime")
        .ok()
        .and_then(|target| {
            let target = target.to_string_lossy().into_owned();
            target
                .split_once("zoneinfo/")
                .map(|(_, name)| name.to_string())
        })
        .unwrap_or_else(|| "UTC".into())
}

/// An API time (`2026-12-03T09:30:00.000Z`) in the local zone, `-` when absent.
fn local(time: &Value, zone: &str) -> String {
    time.as_str()
        .and_then(dcos_core::time::parse_iso8601)
        .map_or_else(|| "-".into(), |ms| wall_clock(ms, zone))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

async fn job_record(client: &Client, id: &str) -> anyhow::Result<Value> {
    Ok(client.get(&cluster_routes::job(id)).await?)
}

async fn all_jobs(client: &Client) -> anyhow::Result<Vec<Value>> {
    let list: Value = client.get(cluster_routes::JOBS).await?;
    Ok(list["jobs"].as_array().cloned().unwrap_or_default())
}

pub(super) async fn job(client: &Client, json: bool, command: JobCommand) -> anyhow::Result<()> {
    match command {
        JobCommand::Add { file } => {
            let job = read_job(&file)?;
            let id = job_id(&job)?;
            if is_chronos(&job) {
                let exists = match client.get::<Value>(&cluster_routes::job(&id)).await {
                    Ok(_) => true,
                    Err(ClientError::Api(e)) if e.status == 404 => false,
                    Err(e) => return Err(e.into()),
                };
                anyhow::ensure!(
                    !exists,
                    "job {id} exists already; `dcos-rs job update` replaces it"
                );
                put_chronos(client, &job).await?;
            } else {
                let body = serde_json::to_vec(&job)?;
                client
                    .send_text(Method::POST, "/v1/jobs", Some(&body))
                    .await?;
            }
            finish(client, json, &id, "added").await
        }
        JobCommand::Update { file } => {
            let mut job = read_job(&file)?;
            let id = job_id(&job)?;
            if is_chronos(&job) {
                put_chronos(client, &job).await?;
            } else {
                let schedules = job.remove("schedules");
                let body = serde_json::to_vec(&job)?;
                let path = format!("/v1/jobs/{id}");
                client.send_text(Method::PUT, &path, Some(&body)).await?;
                for schedule in schedules
                    .as_ref()
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let sid = schedule["id"].as_str().unwrap_or("default");
                    let path = format!("/v1/jobs/{id}/schedules/{sid}");
                    let body = serde_json::to_vec(schedule)?;
                    match client.send_text(Method::PUT, &path, Some(&body)).await {
                        Err(ClientError::Api(e)) if e.status == 404 => {
                            let path = format!("/v1/jobs/{id}/schedules");
                            client.send_text(Method::POST, &path, Some(&body)).await?;
                        }
                        other => {
                            other?;
                        }
                    }
                }
            }
            finish(client, json, &id, "updated").await
        }
        JobCommand::List => {
            let jobs = all_jobs(client).await?;
            if json {
                return print_json(&jobs);
            }
            let zone = local_zone();
            let mut rows = vec![row(&[
                "ID", "SCHEDULE", "NEXT RUN", "LAST RUN", "ACTIVE", "OK", "FAILED",
            ])];
            for job in &jobs {
                let schedule = match (&job["schedule"], job["parents"].as_array()) {
                    (Value::Object(s), _) => {
                        let enabled = s["enabled"] == true && job["disabled"] != true;
                        let words = text(&s["text"]);
                        if enabled {
                            words
                        } else {
                            format!("{words} (disabled)")
                        }
                    }
                    (_, Some(parents)) if !parents.is_empty() => {
                        let names: Vec<String> = parents.iter().map(text).collect();
                        format!("after {}", names.join(" and "))
                    }
                    _ => "on demand".into(),
                };
                let last = match &job["lastRun"] {
                    Value::Object(run) => format!(
                        "{} {}",
                        text(&run["status"]),
                        local(&run["finishedAt"], &zone)
                    ),
                    _ => "-".into(),
                };
                let active = job["activeRuns"].as_array().map_or(0, Vec::len);
                rows.push(vec![
                    text(&job["id"]),
                    schedule,
                    local(&job["schedule"]["nextRunAt"], &zone),
                    last,
                    active.to_string(),
                    text(&job["successCount"]),
                    text(&job["errorCount"]),
                ]);
            }
            print_table(&rows);
            Ok(())
        }
        JobCommand::Show { id } => {
            let mut record = job_record(client, &id).await?;
            // The definition as the API it was written through shows it.
            let definition: Value =
                match client.get(&format!("/v1/jobs/{id}?embed=schedules")).await {
                    Ok(job) => job,
                    Err(_) => client.get(&format!("/v1/scheduler/job/{id}")).await?,
                };
            record["definition"] = definition;
            print_json(&record)
        }
        JobCommand::Run { id, rerun } => {
            let body = match rerun {
                Some(run) => {
                    let record = job_record(client, &id).await?;
                    let runs = record["runs"].as_array().cloned().unwrap_or_default();
                    let Some(found) = runs.iter().find(|r| r["id"] == run.as_str()) else {
                        anyhow::bail!("job {id} has no run {run} (see `dcos-rs job history {id}`)");
                    };
                    serde_json::json!({ "workflowId": found["workflowId"] })
                }
                None => serde_json::json!({}),
            };
            let path = format!("{}/runs", cluster_routes::job(&id));
            let answer = client
                .send_text(Method::POST, &path, Some(body.to_string().as_bytes()))
                .await?;
            let run: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
            if json {
                return print_json(&run);
            }
            println!(
                "run {} of job {id} started (workflow {})",
                text(&run["id"]),
                text(&run["workflowId"])
            );
            Ok(())
        }
        JobCommand::Kill { id, run } => {
            let record = job_record(client, &id).await?;
            let runs: Vec<String> = match run {
                Some(run) => vec![run],
                None => record["activeRuns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect(),
            };
            if runs.is_empty() {
                println!("job {id} has no run under way");
                return Ok(());
            }
            for run in &runs {
                let path = format!("/v1/jobs/{id}/runs/{run}/actions/stop");
                client.send_text(Method::POST, &path, None).await?;
                println!("run {run} of job {id}: stop asked; its task is being killed");
            }
            Ok(())
        }
        JobCommand::Remove { id, stop_runs } => {
            let path = format!("/v1/jobs/{id}?stopCurrentJobRuns={stop_runs}");
            client.send_text(Method::DELETE, &path, None).await?;
            println!("job {id} removed");
            Ok(())
        }
        JobCommand::History { id } => history(client, json, &id).await,
        JobCommand::Retention { id, runs, max_age } => {
            let body = serde_json::json!({ "runs": runs, "maxAgeSeconds": max_age });
            let path = format!("{}/history", cluster_routes::job(&id));
            let answer = client
                .send_text(Method::PUT, &path, Some(body.to_string().as_bytes()))
                .await?;
            if json {
                let view: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
                return print_json(&view);
            }
            match max_age {
                Some(age) => {
                    println!("job {id} keeps its newest {runs} runs that ended within {age} s")
                }
                None => println!("job {id} keeps its newest {runs} runs"),
            }
            Ok(())
        }
        JobCommand::Logs {
            id,
            run,
            stderr,
            follow,
        } => logs(client, &id, run, stderr, follow).await,
        JobCommand::Graph { dot } => {
            if dot {
                print!("{}", client.get_text("/v1/scheduler/graph/dot").await?);
                return Ok(());
            }
            let jobs = all_jobs(client).await?;
            if json {
                let edges: Vec<Value> = jobs
                    .iter()
                    .map(|j| serde_json::json!({ "id": j["id"], "parents": j["parents"] }))
                    .collect();
                return print_json(&edges);
            }
            print!("{}", tree(&jobs));
            Ok(())
        }
    }
}

/// After a write: the job's summary line (or its JSON).
async fn finish(client: &Client, json: bool, id: &str, done: &str) -> anyhow::Result<()> {
    let record = job_record(client, id).await?;
    if json {
        return print_json(&record);
    }
    let schedule = match &record["schedule"] {
        Value::Object(s) => format!(
            "{}; next run {}",
            text(&s["text"]),
            local(&s["nextRunAt"], &local_zone())
        ),
        _ => "no schedule".into(),
    };
    println!("job {id} {done}: {schedule}");
    Ok(())
}

/// The jobs related to `id` (it, its ancestors and descendants): a workflow run spans them.
fn related(jobs: &[Value], id: &str) -> BTreeSet<String> {
    let parents: BTreeMap<String, Vec<String>> = jobs
        .iter()
        .map(|j| {
            let ps = j["parents"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            (text(&j["id"]), ps)
        })
        .collect();
    let mut seen = BTreeSet::from([id.to_string()]);
    let mut todo = vec![id.to_string()];
    while let Some(job) = todo.pop() {
        let up = parents.get(&job).cloned().unwrap_or_default();
        let down = parents
            .iter()
            .filter(|(_, ps)| ps.contains(&job))
            .map(|(child, _)| child.clone());
        for next in up.into_iter().chain(down) {
            if seen.insert(next.clone()) {
                todo.push(next);
            }
        }
    }
    seen
}

async fn history(client: &Client, json: bool, id: &str) -> anyhow::Result<()> {
    let jobs = all_jobs(client).await?;
    anyhow::ensure!(
        jobs.iter().any(|j| j["id"] == id),
        "no job {id} (see `dcos-rs job list`)"
    );
    // Every run of the related jobs, by workflow; workflows in which `id` ran.
    let mut workflows: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for job in related(&jobs, id) {
        let record = job_record(client, &job).await?;
        for run in record["runs"].as_array().into_iter().flatten() {
            let mut run = run.clone();
            run["jobId"] = job.clone().into();
            workflows
                .entry(text(&run["workflowId"]))
                .or_default()
                .push(run);
        }
    }
    workflows.retain(|_, runs| runs.iter().any(|r| r["jobId"] == id));
    let mut ordered: Vec<(String, Vec<Value>)> = workflows.into_iter().collect();
    for (_, runs) in &mut ordered {
        runs.sort_by_key(|r| text(&r["createdAt"]));
    }
    ordered.sort_by_key(|(_, runs)| text(&runs[0]["createdAt"]));
    if json {
        let view: Vec<Value> = ordered
            .iter()
            .map(|(workflow, runs)| serde_json::json!({ "workflowId": workflow, "runs": runs }))
            .collect();
        return print_json(&view);
    }
    if ordered.is_empty() {
        println!("job {id} has not run yet");
        return Ok(());
    }
    let zone = local_zone();
    for (workflow, runs) in &ordered {
        println!("workflow {workflow}");
        let mut rows = vec![row(&[
            "  JOB",
            "RUN",
            "TRIGGER",
            "STATUS",
            "SCHEDULED",
            "FINISHED",
            "ATTEMPTS",
            "EXIT",
        ])];
        for run in runs {
            let attempts = run["attempts"].as_array().cloned().unwrap_or_default();
            let exit = attempts
                .last()
                .map_or_else(|| "-".into(), |a| text(&a["exitCode"]));
            rows.push(vec![
                format!("  {}", text(&run["jobId"])),
                text(&run["id"]),
                text(&run["trigger"]),
                text(&run["status"]),
                local(&run["scheduledAt"], &zone),
                local(&run["finishedAt"], &zone),
                text(&run["attempt"]),
                exit,
            ]);
        }
        print_table(&rows);
    }
    Ok(())
}

async fn logs(
    client: &Client,
    id: &str,
    run: Option<String>,
    stderr: bool,
    follow: bool,
) -> anyhow::Result<()> {
    let record = job_record(client, id).await?;
    let runs = record["runs"].as_array().cloned().unwrap_or_default();
    let found = match &run {
        Some(run) => runs.iter().find(|r| r["id"] == run.as_str()),
        None => runs.iter().max_by_key(|r| text(&r["createdAt"])),
    };
    let Some(found) = found else {
        match run {
            Some(run) => {
                anyhow::bail!("job {id} has no run {run} (see `dcos-rs job history {id}`)")
            }
            None => anyhow::bail!("job {id} has not run yet"),
        }
    };
    let finished = !found["finishedAt"].is_null();
    let stream = if stderr { "stderr" } else { "stdout" };
    if finished {
        match found[stream].as_str() {
            Some(output) => print!("{output}"),
            None => anyhow::bail!(
                "run {} kept no output (only the newest runs of a job keep theirs)",
                text(&found["id"])
            ),
        }
        return Ok(());
    }
    let task_id = found["tasks"].as_array().and_then(|t| t.last()).map(text);
    let (Some(task_id), Some(agent_url)) = (task_id, found["agentUrl"].as_str()) else {
        anyhow::bail!(
            "run {} has no task yet: it waits for room (see `dcos-rs job show {id}`)",
            text(&found["id"])
        );
    };
    let url = format!(
        "{agent_url}{}?follow={follow}",
        dcos_api::routes::agent::task_log(&task_id, stream)
    );
    // Placed but not yet on its agent: the agent has no sandbox for it for a moment.
    for _ in 0..25 {
        match client.stream_to(&url, &mut tokio::io::stdout()).await {
            Err(crate::cli::client::ClientError::Api(e)) if e.status == 404 => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            other => return other.map(drop).map_err(Into::into),
        }
    }
    anyhow::bail!(
        "task {task_id} of run {} did not reach its agent",
        text(&found["id"])
    )
}

/// The jobs as a forest: roots (no parents) first, each job's children indented under it
/// (a job with several parents under each).
fn tree(jobs: &[Value]) -> String {
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut roots = Vec::new();
    for job in jobs {
        let id = text(&job["id"]);
        let parents: Vec<String> = job["parents"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        if parents.is_empty() {
            roots.push(id.clone());
        }
        for parent in parents {
            children.entry(parent).or_default().push(id.clone());
        }
    }
    fn walk(id: &str, depth: usize, children: &BTreeMap<String, Vec<String>>, out: &mut String) {
        out.push_str(&format!("{}{id}\n", "  ".repeat(depth)));
        // Parents are refused when they would make a cycle: the depth stays bounded.
        for child in children.get(id).into_iter().flatten() {
            walk(child, depth + 1, children, out);
        }
    }
    let mut out = String::new();
    for root in roots {
        walk(&root, 0, &children, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs() -> Vec<Value> {
        serde_json::from_str(
            r#"[{"id":"extract","parents":[]},{"id":"load","parents":["extract","clean"]},
                {"id":"clean","parents":[]},{"id":"report","parents":["load"]},
                {"id":"alone","parents":[]}]"#,
        )
        .unwrap()
    }

    #[test]
    fn ages_read_with_their_unit() {
        assert_eq!(parse_age("90"), Ok(90));
        assert_eq!(parse_age("90s"), Ok(90));
        assert_eq!(parse_age("30m"), Ok(1_800));
        assert_eq!(parse_age("12h"), Ok(43_200));
        assert_eq!(parse_age("7d"), Ok(604_800));
        assert!(parse_age("7w").is_err());
        assert!(parse_age("d").is_err());
    }

    #[test]
    fn the_graph_is_a_forest_with_each_child_under_each_parent() {
        assert_eq!(
            tree(&jobs()),
            "extract\n  load\n    report\nclean\n  load\n    report\nalone\n"
        );
    }

    #[test]
    fn a_workflow_spans_a_jobs_ancestors_and_descendants() {
        let related = related(&jobs(), "load");
        let expected: BTreeSet<String> = ["clean", "extract", "load", "report"]
            .map(String::from)
            .into();
        assert_eq!(related, expected);
        assert_eq!(super::related(&jobs(), "alone").len(), 1);
    }
}
