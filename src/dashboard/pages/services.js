// Services (Marathon's apps): the list with instances against what was asked and the
// deployments' progress; a service's page with its tasks, health, why it waits, versions
// with a diff between two, and the actions (edit, scale, restart, roll back, remove); and
// deploying a new one from the JSON editor.

import { get, call } from "../api.js";
import { el, link, enc, badge, table, section, facts, num, mib, when, ago, ask, toast, act, shown } from "../ui.js";
import { jsonEditor } from "../editor.js";
import { diffLines } from "../diff.js";

/** What an app's state is, in one word, from its counts and deployments. */
function status(app) {
  if (app.deployments && app.deployments.length) return "deploying";
  if (app.instances === 0) return "suspended";
  if (app.tasksRunning < app.instances) return "waiting";
  if (app.healthChecks && app.healthChecks.length && app.tasksHealthy < app.instances) return "unhealthy";
  return "running";
}

function what(app) {
  const image = app.container && app.container.docker && app.container.docker.image;
  return image || app.cmd || (app.args || []).join(" ") || "—";
}

function progress(deployment) {
  if (!deployment) return "";
  const bar = el("progress", { max: deployment.totalSteps, value: Math.max(0, deployment.currentStep - 1) });
  return el("span.progress", bar, ` step ${deployment.currentStep}/${deployment.totalSteps}`);
}

export async function list(ctx) {
  const filter = el("input", { type: "search", placeholder: "Filter by id", "aria-label": "Filter services by id", value: ctx.query.get("q") || "" });
  const body = el("div");
  let apps = [], deployments = [];
  function render() {
    const q = filter.value.trim().toLowerCase();
    const byApp = new Map();
    for (const d of deployments) for (const a of d.affectedApps) byApp.set(a, d);
    const rows = apps.filter(a => a.id.toLowerCase().includes(q)).map(a => [
      link("/services/" + enc(a.id), a.id), badge(status(a)),
      `${a.tasksRunning} / ${a.instances}`,
      a.healthChecks && a.healthChecks.length ? `${a.tasksHealthy} healthy` : "no checks",
      String(a.tasksStaged), num(a.cpus), mib(a.mem), el("span.clip", what(a)), progress(byApp.get(a.id))]);
    body.replaceChildren(table(["Id", "Status", "Running / wanted", "Health", "Staged", "CPUs", "Memory", "Runs", "Deployment"], rows,
      apps.length ? "No service matches the filter." : "No services yet: deploy one."));
  }
  async function draw() {
    [{ apps }, deployments] = await Promise.all([get("/v2/apps", ctx.signal), get("/v2/deployments", ctx.signal)]);
    render();
  }
  filter.addEventListener("input", render);
  ctx.onRedraw(draw);
  await draw();
  return el("div",
    el("div.page-head", el("h1", "Services"), el("a.button.primary", { href: "#/services/new" }, "Deploy a service")),
    el("div.toolbar", filter), body);
}

const EXAMPLE_APP = {
  id: "/hello",
  cmd: "while true; do echo hello from $HOSTNAME; sleep 5; done",
  cpus: 0.1,
  mem: 32,
  instances: 1,
};

/** Keys Marathon's answers carry that are not part of a definition. */
const READ_ONLY = ["version", "versionInfo", "tasks", "tasksRunning", "tasksStaged", "tasksHealthy", "tasksUnhealthy", "deployments", "lastTaskFailure", "readinessCheckResults", "taskStats"];

function definitionOf(app) {
  const copy = { ...app };
  for (const k of READ_ONLY) delete copy[k];
  return copy;
}

export async function create(ctx) {
  const editor = jsonEditor(JSON.stringify(EXAMPLE_APP, null, 2), "Deploy", async value => {
    const app = await call("POST", "/v2/apps", value);
    toast(`Deploying ${app.id}`);
    ctx.go("/services/" + enc(app.id));
  });
  return el("div",
    el("div.page-head", el("h1", "Deploy a service")),
    section("Definition",
      el("p.hint", "A Marathon app definition (the same JSON as ", el("code", "POST /v2/apps"), " and ", el("code", "dcos-rs app deploy"), "). Errors are shown at their field."),
      editor.node));
}

export async function detail(ctx, id) {
  const appPath = "/v2/apps/" + id.replace(/^\//, "");
  const head = el("div.page-head");
  const body = el("div");
  const versionsBox = el("div");
  const editBox = el("details.card", el("summary", el("h2.inline", "Edit definition")));
  let app = null;
  let editor = null;

  async function draw() {
    const [{ app: fresh }, placement, extras] = await Promise.all([
      get(appPath + "?embed=app.readiness", ctx.signal),
      get("/cluster/v1/placement/" + id.replace(/^\//, ""), ctx.signal).catch(() => null),
      get("/cluster/v1/apps/" + id.replace(/^\//, ""), ctx.signal).catch(() => null),
    ]);
    const versionChanged = !app || app.version !== fresh.version;
    app = fresh;
    head.replaceChildren(el("h1", el("span.muted", "Service "), app.id), badge(status(app)), actions());
    body.replaceChildren(...[
      section("Summary", facts([
        ["Instances", `${app.tasksRunning} running, ${app.tasksStaged} staged of ${app.instances} wanted`],
        ["Health", app.healthChecks.length ? `${app.tasksHealthy} healthy, ${app.tasksUnhealthy} unhealthy (${app.healthChecks.length} check(s))` : "no health checks"],
        ["Resources", `${num(app.cpus)} CPUs, ${mib(app.mem)} memory, ${mib(app.disk)} disk per instance`],
        ["Runs", what(app)],
        ["Version", when(app.version)],
        ["Deployment", app.deployments.length ? app.deployments.map(d => d.id).join(", ") : "none"],
        extras && extras.lastAutomaticRollback ? ["Last automatic rollback", JSON.stringify(extras.lastAutomaticRollback)] : null,
      ])),
      whyWaiting(app, placement),
      section("Tasks", table(["Task", "State", "Host", "Started", "Health", "Ports"], (app.tasks || []).map(t => [
        link("/tasks/" + enc(t.id), t.id), badge(t.state), t.host, t.startedAt ? ago(t.startedAt) : "—",
        healthOf(t), (t.ports || []).join(", ") || "—"]), "No tasks."))].filter(Boolean));
    if (versionChanged) await drawVersions();
    if (!editor) {
      editor = jsonEditor(JSON.stringify(definitionOf(app), null, 2), "Deploy changes", async value => {
        await call("PUT", appPath, value);
        toast(`Deploying the new definition of ${app.id}`);
        editBox.open = false;
      });
      editBox.append(editor.node);
    } else if (versionChanged && !editBox.open) {
      editor.setText(JSON.stringify(definitionOf(app), null, 2));
    }
  }

  async function drawVersions() {
    const { versions } = await get(appPath + "/versions", ctx.signal);
    const options = versions.map(v => ({ value: v, label: when(v) + (v === app.version ? " (current)" : "") }));
    const pick = (name, chosen) => el("select", { "aria-label": name }, options.map(o => el("option", { value: o.value, selected: o.value === chosen }, o.label)));
    const from = pick("Older version", versions[1] || versions[0]);
    const to = pick("Newer version", versions[0]);
    const out = el("div.diff");
    async function compare() {
      const [a, b] = await Promise.all([get(`${appPath}/versions/${from.value}`), get(`${appPath}/versions/${to.value}`)]);
      const lines = diffLines(JSON.stringify(definitionOf(a), null, 2), JSON.stringify(definitionOf(b), null, 2));
      const changed = lines.some(l => l.op !== " ");
      out.replaceChildren(changed
        ? el("pre.diff-lines", folded(lines).map(l => l.skipped
          ? el("span.d-skip", `  … ${l.skipped} unchanged line(s)\n`)
          : el("span.d" + (l.op === "+" ? "-add" : l.op === "-" ? "-del" : "-same"), l.op + " " + l.line + "\n")))
        : el("p.empty", "The two versions are the same."));
    }
    from.addEventListener("change", () => shown(ctx, compare()));
    to.addEventListener("change", () => shown(ctx, compare()));
    versionsBox.replaceChildren(section(`Versions (${versions.length})`,
      el("div.toolbar", el("label", "Compare ", from), el("label", " with ", to)), out));
    await shown(ctx, compare());
  }

  function actions() {
    const button = (text, onclick, cls = "") => el("button" + cls, { type: "button", onclick }, text);
    return el("div.actions",
      button("Scale", async () => {
        const v = await ask(`Scale ${app.id}`, [{ name: "instances", label: "Instances", type: "number", min: 0, value: app.instances, required: true }], "Scale");
        if (!v) return;
        await act(ctx, () => call("PUT", appPath, { instances: Number(v.instances) }), `Scaling ${app.id} to ${v.instances}`);
      }),
      button("Restart", async () => {
        const v = await ask(`Restart ${app.id}?`, [], "Restart");
        if (v) await act(ctx, () => call("POST", appPath + "/restart"), `Restarting ${app.id}`);
      }),
      button("Roll back", () => shown(ctx, (async () => {
        const { versions } = await get(appPath + "/versions", ctx.signal);
        const older = versions.filter(v => v !== app.version);
        if (!older.length) return toast("There is no earlier version to roll back to.", "error");
        const v = await ask(`Roll ${app.id} back`, [{ name: "version", label: "To version", options: older.map(x => ({ value: x, label: when(x) })), value: older[0] }], "Roll back");
        if (v) await act(ctx, () => call("PUT", appPath, { version: v.version }), `Rolling ${app.id} back to ${when(v.version)}`);
      })())),
      button("Remove", async () => {
        const v = await ask(`Remove ${app.id}?`, [], "Remove", true);
        if (!v) return;
        await act(ctx, () => call("DELETE", appPath), `Removing ${app.id}`, "/services");
      }, ".danger"));
  }

  ctx.onRedraw(draw);
  await draw();
  return el("div", head, body, versionsBox, editBox);
}

/** Unchanged lines further than DIFF_CONTEXT from a change, folded into one marker. */
const DIFF_CONTEXT = 3;
function folded(lines) {
  const near = lines.map(() => false);
  lines.forEach((l, i) => {
    if (l.op === " ") return;
    for (let j = Math.max(0, i - DIFF_CONTEXT); j <= Math.min(lines.length - 1, i + DIFF_CONTEXT); j++) near[j] = true;
  });
  const out = [];
  for (let i = 0; i < lines.length; i++) {
    if (near[i]) { out.push(lines[i]); continue; }
    if (out.length && out[out.length - 1].skipped) out[out.length - 1].skipped++;
    else out.push({ skipped: 1 });
  }
  return out;
}

function healthOf(task) {
  const results = task.healthCheckResults || [];
  if (!results.length) return "—";
  return results.every(r => r.alive) ? badge("healthy") : badge("unhealthy");
}

/** Why instances are not placed: the leader's reasons per agent (only while some wait). */
function whyWaiting(app, placement) {
  if (!placement || !placement.missing) return null;
  const rows = (placement.agents || []).map(a => [a.agentId || a.id || "", a.hostname || "", (a.reasons || [a.reason]).filter(Boolean).join("; ")]);
  return section("Why not placed",
    el("p", `${placement.missing} instance(s) wait for room` + (placement.waitingSince ? ` since ${ago(placement.waitingSince)}` : "") +
      (placement.delaySeconds ? `; launches back off for ${placement.delaySeconds} s` : "") + "."),
    table(["Agent", "Host", "Why not there"], rows, "No agent is registered."));
}
