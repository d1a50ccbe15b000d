// Overview: masters (leader, term, health), agents by state, resources used against the
// total with the last hour's chart, tasks by state, recent events, and what needs a look
// (deployments in progress, services waiting for room, failed jobs).

import { get, recentEvents } from "../api.js";
import { el, link, enc, badge, table, section, meter, num, mib, ago, when } from "../ui.js";
import { lineChart } from "../chart.js";

const pct = (used, total) => (total > 0 ? (100 * used) / total : 0);

export default async function overview(ctx) {
  const body = el("div.grid");
  async function draw() {
    const paths = ["/cluster/v1/nodes", "/cluster/v1/tasks", "/cluster/v1/usage", "/v2/deployments", "/v2/queue", "/cluster/v1/jobs"];
    const answers = await Promise.allSettled(paths.map(p => get(p, ctx.signal)));
    if (ctx.signal.aborted) return;
    // Each card from its own answers: one failing endpoint leaves the others shown.
    const card = (title, indexes, draw) => {
      const failed = indexes.map(i => answers[i]).find(a => a.status === "rejected");
      if (failed) return section(title, el("p.error", failed.reason.message));
      return draw(...indexes.map(i => answers[i].value));
    };
    body.replaceChildren(
      card("Masters", [0], nodes => mastersCard(nodes.masters)),
      card("Resources", [2], resourcesCard),
      card("Agents", [0], nodes => agentsCard(nodes.agents)),
      card("Tasks", [1], tasks => tasksCard(tasks.tasks)),
      card("Needs a look", [3, 4, 5], (deployments, queue, jobs) => attentionCard(deployments, queue.queue, jobs.jobs)),
      eventsCard());
  }
  ctx.onRedraw(draw);
  await draw();
  return el("div", el("h1", "Overview"), body);
}

function mastersCard(masters) {
  const leader = masters.find(m => m.role === "leader");
  const rows = masters.map(m => [
    link("/nodes", "master " + m.id), badge(m.role), String(m.term),
    m.lag == null ? (m.lastLogIndex == null ? "—" : "log " + m.lastLogIndex) : m.lag === 0 ? "in step" : m.lag + " behind",
    m.version || "—"]);
  return section("Masters",
    el("p.summary", leader ? `Master ${leader.id} leads (term ${leader.term}); ${masters.length} master(s).` : "No leader known to this master."),
    table(["Master", "Role", "Term", "Log", "Build"], rows, "no masters"));
}

function resourcesCard(usage) {
  const now = usage.now;
  const samples = usage.samples.concat([now]);
  const series = [
    { name: "CPUs", cls: "cpu", points: samples.map(s => [Date.parse(s.at), pct(s.cpus.used, s.cpus.total)]) },
    { name: "Memory", cls: "mem", points: samples.map(s => [Date.parse(s.at), pct(s.mem.used, s.mem.total)]) },
    { name: "Disk", cls: "disk", points: samples.map(s => [Date.parse(s.at), pct(s.disk.used, s.disk.total)]) },
  ];
  const to = Date.parse(now.at);
  const from = Math.min(to - 3600 * 1000, ...series[0].points.map(p => p[0]));
  return section("Resources",
    el("div.meters",
      el("div", el("span.legend.cpu", "CPUs"), meter(now.cpus.used, now.cpus.total, `${num(now.cpus.used)} of ${num(now.cpus.total)} used`)),
      el("div", el("span.legend.mem", "Memory"), meter(now.mem.used, now.mem.total, `${mib(now.mem.used)} of ${mib(now.mem.total)} used`)),
      el("div", el("span.legend.disk", "Disk"), meter(now.disk.used, now.disk.total, `${mib(now.disk.used)} of ${mib(now.disk.total)} used`))),
    lineChart(series, from, to, "Share of CPUs, memory and disk in use over the last hour"),
    el("p.hint", `A sample every ${usage.intervalSeconds} s, kept by this master since it started (${usage.samples.length} so far).`));
}

function countBy(items, key) {
  const counts = new Map();
  for (const item of items) counts.set(key(item), (counts.get(key(item)) || 0) + 1);
  return [...counts.entries()].sort();
}

function agentsCard(agents) {
  return section("Agents",
    el("p.counts", countBy(agents, a => a.state).map(([state, n]) => el("span.count", badge(state), " ", String(n)))),
    agents.length ? null : el("p.empty", "No agent has registered yet."),
    el("p", link("/nodes", "All nodes →")));
}

function tasksCard(tasks) {
  return section("Tasks",
    el("p.counts", countBy(tasks, t => t.state).map(([state, n]) =>
      el("a.count", { href: "#/tasks?state=" + state }, badge(state), " ", String(n)))),
    tasks.length ? null : el("p.empty", "No tasks."),
    el("p", link("/tasks", `All ${tasks.length} tasks →`)));
}

function attentionCard(deployments, queue, jobs) {
  const items = [];
  for (const d of deployments) {
    items.push(el("li", "Deployment of ", d.affectedApps.map(a => link("/services/" + enc(a), a)),
      `: step ${d.currentStep} of ${d.totalSteps} (`, (d.currentActions || []).map(a => a.action).join(", "), ")"));
  }
  for (const q of queue) {
    items.push(el("li", link("/services/" + enc(q.app.id), q.app.id), ` waits for room for ${q.count} instance(s) since ${ago(q.since)}`,
      q.delay && q.delay.timeLeftSeconds ? ` (backing off ${q.delay.timeLeftSeconds} s)` : ""));
  }
  for (const j of jobs) {
    if (j.lastRun && j.lastRun.status === "FAILED") {
      items.push(el("li", "Job ", link("/jobs/" + enc(j.id), j.id), " failed its last run (", when(j.lastRun.finishedAt), ")"));
    }
  }
  return section("Needs a look", items.length ? el("ul.attention", items) : el("p.empty", "Nothing: no deployment in progress, no service waiting, no failed job."));
}

function eventsCard() {
  const rows = recentEvents.slice(0, 10).map(e => [ago(e.at), e.type,
    e.data.appId || e.data.jobId || e.data.taskId || e.data.id || (e.data.plan && e.data.plan.id) || ""]);
  return section("Recent events", table(["When", "Event", "About"], rows, "No events since this page was opened."));
}
