// Jobs (Chronos's and Metronome's): the list with each schedule in words and the next run
// in the viewer's time zone; a job's page with its runs (each with the end of its output),
// its dependency graph, and the actions run now, enable/disable, edit and remove.

import { get, call } from "../api.js";
import { el, link, enc, badge, table, section, facts, when, ago, ask, toast, act, shown } from "../ui.js";
import { jsonEditor } from "../editor.js";
import { jobGraph } from "../graph.js";

const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;

function scheduleText(job) {
  if (!job.schedule) return job.parents && job.parents.length ? "after " + job.parents.join(", ") : "only when started";
  const live = job.schedule.enabled && !job.disabled;
  return job.schedule.text + (live ? "" : " (disabled)");
}

function lastResult(job) {
  if (job.activeRuns && job.activeRuns.length) return badge("ACTIVE", "running now");
  if (!job.lastRun) return el("span.muted", "never ran");
  return el("span", badge(job.lastRun.status), " ", job.lastRun.finishedAt ? ago(job.lastRun.finishedAt) : "");
}

export async function list(ctx) {
  const body = el("div");
  async function draw() {
    const { jobs } = await get("/cluster/v1/jobs", ctx.signal);
    body.replaceChildren(table(["Job", "Schedule", `Next run (${ZONE})`, "Last result", "Succeeded", "Failed"], jobs.map(j => [
      link("/jobs/" + enc(j.id), j.id), scheduleText(j), j.schedule && j.schedule.nextRunAt ? when(j.schedule.nextRunAt) : "—",
      lastResult(j), String(j.successCount), String(j.errorCount)]),
    "No jobs yet: create them with dcos-rs job, the DC/OS CLI, or Chronos's and Metronome's clients."));
  }
  ctx.onRedraw(draw);
  await draw();
  return el("div", el("div.page-head", el("h1", "Jobs"), el("a.button.primary", { href: "#/jobs/new" }, "New job")), body);
}

export async function create(ctx) {
  const example = { id: "hello-job", description: "Says hello", run: { cmd: "echo hello", cpus: 0.1, mem: 32, disk: 0 } };
  const editor = jsonEditor(JSON.stringify(example, null, 2), "Create", async value => {
    const job = await call("POST", "/v1/jobs", value);
    toast(`Created job ${job.id}`);
    ctx.go("/jobs/" + enc(job.id));
  });
  return el("div", el("div.page-head", el("h1", "New job")),
    section("Definition", el("p.hint", "A Metronome job (", el("code", "POST /v1/jobs"), "); add a schedule on its page or with ", el("code", "dcos-rs job"), "."), editor.node));
}

export async function detail(ctx, id) {
  const head = el("div.page-head");
  const body = el("div.grid");
  const runsBox = el("div");
  const editBox = el("details.card", el("summary", el("h2.inline", "Edit definition")));
  let job = null;
  let editorLoaded = false;
  /** Runs the viewer opened: they stay open across redraws. */
  const openRuns = new Set();

  async function draw() {
    const [record, { jobs }] = await Promise.all([get("/cluster/v1/jobs/" + enc(id), ctx.signal), get("/cluster/v1/jobs", ctx.signal)]);
    job = record;
    head.replaceChildren(el("h1", el("span.muted", "Job "), job.id), lastResult(job), actions());
    const statuses = new Map(jobs.map(j => [j.id, j.lastRun ? j.lastRun.status : null]));
    const graph = jobGraph(jobs, id, x => statuses.get(x));
    body.replaceChildren(
      section("Summary", facts([
        ["Description", job.description || ""],
        ["Schedule", scheduleText(job)],
        job.schedule ? ["Expression", `${job.schedule.expression} (${job.schedule.timeZone || "UTC"}, concurrency ${job.schedule.concurrency || "—"})`] : null,
        [`Next run (${ZONE})`, job.schedule && job.schedule.nextRunAt ? when(job.schedule.nextRunAt) : "—"],
        ["Parents", job.parents && job.parents.length ? job.parents.map(p => link("/jobs/" + enc(p), p)) : "none"],
        ["Runs", `${job.successCount} succeeded, ${job.errorCount} failed; history keeps ${job.historyKept} run(s)`],
        job.skipped && job.skipped.length ? ["Skipped", job.skipped.map(s => `${s.count} × ${s.reason} (${when(s.first)} – ${when(s.last)})`).join("; ")] : null,
      ])),
      section("Dependencies", graph ? el("div.graph-wrap", graph) : el("p.empty", "This job has no parents and no children.")));
    const runs = (job.runs || []).slice().sort((a, b) => b.createdAt.localeCompare(a.createdAt));
    runsBox.replaceChildren(section(`Run history (${runs.length})`,
      runs.length ? el("div.runs", runs.map(runView)) : el("p.empty", "No runs yet.")));
  }

  function runView(run) {
    const attempts = run.attempts.map(a => `${a.state.replace("TASK_", "").toLowerCase()}${a.exitCode != null ? " (exit " + a.exitCode + ")" : ""}`).join(", ");
    const output = [];
    if (run.stdout) output.push(el("h4", "stdout (end)"), el("pre.log.small", run.stdout));
    if (run.stderr) output.push(el("h4", "stderr (end)"), el("pre.log.small", run.stderr));
    return el("details.run", {
      dataset: { run: run.id }, open: openRuns.has(run.id),
      ontoggle: ev => (ev.target.open ? openRuns.add(run.id) : openRuns.delete(run.id)),
    },
      el("summary", badge(run.status), " ", el("strong", when(run.createdAt)), ` · ${run.trigger}`,
        run.finishedAt ? ` · finished ${ago(run.finishedAt)}` : " · in progress", attempts ? ` · attempts: ${attempts}` : ""),
      facts([["Run", run.id], ["Workflow", run.workflowId], run.scheduledAt ? ["Scheduled for", when(run.scheduledAt)] : null,
        ["Tasks", run.tasks.length ? run.tasks.map(t => link("/tasks/" + enc(t), t)) : "none"]]),
      output.length ? output : el("p.empty", run.finishedAt ? "No output was kept." : "The output is kept when the run ends; its task's log is on the task's page."));
  }

  function actions() {
    const button = (text, onclick, cls = "") => el("button" + cls, { type: "button", onclick }, text);
    const enabled = job.schedule && job.schedule.enabled;
    return el("div.actions",
      button("Run now", () => act(ctx, () => call("POST", `/cluster/v1/jobs/${enc(id)}/runs`, {}), `Started a run of ${id}`), ".primary"),
      // Metronome's cron schedules; Chronos's ISO 8601 ones change through Chronos's API.
      job.schedule && job.schedule.kind === "cron" ? button(enabled ? "Disable" : "Enable", async () => {
        const path = `/v1/jobs/${enc(id)}/schedules/${enc(job.schedule.id)}`;
        await act(ctx, async () => {
          const s = await get(path, ctx.signal);
          // What Metronome's PUT takes (its answer also has `nextRunAt`, which it refuses).
          await call("PUT", path, {
            id: s.id, cron: s.cron, timezone: s.timezone, startingDeadlineSeconds: s.startingDeadlineSeconds,
            concurrencyPolicy: s.concurrencyPolicy, enabled: !enabled,
          });
        }, `${enabled ? "Disabled" : "Enabled"} the schedule of ${id}`);
      }) : null,
      button("Remove", async () => {
        const v = await ask(`Remove job ${id} and its history?`, [], "Remove", true);
        if (v) await act(ctx, () => call("DELETE", `/v1/jobs/${enc(id)}`), `Removed ${id}`, "/jobs");
      }, ".danger"));
  }

  editBox.addEventListener("toggle", () => shown(ctx, (async () => {
    if (!editBox.open || editorLoaded) return;
    const definition = await get(`/v1/jobs/${enc(id)}`, ctx.signal);
    editorLoaded = true;
    const editor = jsonEditor(JSON.stringify(definition, null, 2), "Save", async value => {
      await call("PUT", `/v1/jobs/${enc(id)}`, value);
      toast(`Saved ${id}`);
      await ctx.redraw();
    });
    editBox.append(el("p.hint", "Metronome's job definition (", el("code", "PUT /v1/jobs/" + id), "); schedules are kept."), editor.node);
  })()));

  ctx.onRedraw(draw);
  await draw();
  return el("div", head, body, runsBox, editBox);
}
