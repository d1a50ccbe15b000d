// Nodes: the masters (role, term, log, build) and the agents (state, resources used of
// their total, attributes, build, last heartbeat); an agent's page with its tasks and the
// actions drain and remove.

import { get, call } from "../api.js";
import { el, link, enc, badge, table, section, facts, num, mib, meter, when, ask, act } from "../ui.js";
import { ownerLink } from "./tasks.js";

function heard(agent) {
  return agent.lastHeartbeatMsAgo == null ? "—" : (agent.lastHeartbeatMsAgo / 1000).toFixed(1) + " s ago";
}

function attributes(agent) {
  const entries = Object.entries(agent.attributes || {});
  return entries.length ? entries.map(([k, v]) => el("span.tag", `${k}=${v}`)) : "—";
}

export async function list(ctx) {
  const body = el("div");
  async function draw() {
    const nodes = await get("/cluster/v1/nodes", ctx.signal);
    body.replaceChildren(
      section("Masters", table(["Master", "URL", "Role", "Term", "Log index", "Behind", "Build"], nodes.masters.map(m => [
        "master " + m.id, m.url, badge(m.role), String(m.term), m.lastLogIndex == null ? "—" : String(m.lastLogIndex),
        m.lag == null ? "—" : String(m.lag), m.version || "—"]), "No masters.")),
      section("Agents", table(["Agent", "State", "CPUs", "Memory", "Disk", "Tasks", "Attributes", "Build", "Heard"], nodes.agents.map(a => [
        el("span", link("/nodes/" + enc(a.id), a.hostname), el("div.hint", a.id)), badge(a.state),
        meter(a.usedCpus, a.cpus, `${num(a.usedCpus)} / ${num(a.cpus)}`),
        meter(a.usedMem, a.mem, `${mib(a.usedMem)} / ${mib(a.mem)}`),
        a.usedDisk == null ? mib(a.disk) : meter(a.usedDisk, a.disk, `${mib(a.usedDisk)} / ${mib(a.disk)}`),
        String(a.tasks), el("span", attributes(a)), a.version || "—", heard(a)]), "No agent has registered.")));
  }
  ctx.onRedraw(draw);
  await draw();
  return el("div", el("div.page-head", el("h1", "Nodes")), body);
}

export async function detail(ctx, id) {
  const head = el("div.page-head");
  const body = el("div.grid");
  let agent = null;
  async function draw() {
    const [nodes, { tasks }] = await Promise.all([get("/cluster/v1/nodes", ctx.signal), get("/cluster/v1/tasks", ctx.signal)]);
    agent = nodes.agents.find(a => a.id === id);
    if (!agent) {
      head.replaceChildren(el("h1", el("span.muted", "Agent "), id));
      body.replaceChildren(el("p.empty", "No agent has this id (a removed agent is forgotten)."));
      return;
    }
    head.replaceChildren(el("h1", el("span.muted", "Agent "), agent.hostname), badge(agent.state), actions());
    const mine = tasks.filter(t => t.slaveId === id).sort((a, b) => (b.stagedAt || "").localeCompare(a.stagedAt || ""));
    body.replaceChildren(
      section("Summary", facts([
        ["Id", agent.id], ["API", agent.url], ["State", agent.state],
        ["CPUs", meter(agent.usedCpus, agent.cpus, `${num(agent.usedCpus)} of ${num(agent.cpus)} used`)],
        ["Memory", meter(agent.usedMem, agent.mem, `${mib(agent.usedMem)} of ${mib(agent.mem)} used`)],
        ["Disk", agent.usedDisk == null ? mib(agent.disk) : meter(agent.usedDisk, agent.disk, `${mib(agent.usedDisk)} of ${mib(agent.disk)} used`)],
        ["Attributes", el("span", attributes(agent))], ["Build", agent.version || "—"],
        ["Registered", when(agent.registeredAt)], ["Last heard", heard(agent)]])),
      section(`Tasks (${mine.length})`, table(["Task", "Owner", "State", "CPUs", "Memory"], mine.map(t => [
        link("/tasks/" + enc(t.id), t.id), ownerLink(t), badge(t.state), num(t.cpus), mib(t.mem)]), "No tasks on this agent.")));
  }

  function actions() {
    const draining = agent.state === "draining";
    return el("div.actions",
      el("button", { type: "button", disabled: draining, onclick: async () => {
        const v = await ask(`Drain ${agent.hostname}?`, [], "Drain", true);
        if (!v) return;
        await act(ctx, () => call("POST", `/cluster/v1/agents/${enc(id)}/drain`, {}), `Draining ${agent.hostname}: no new tasks; its tasks move elsewhere`);
      } }, draining ? "Draining" : "Drain"),
      el("button.danger", { type: "button", onclick: async () => {
        const v = await ask(`Remove ${agent.hostname}? Its tasks (if any) are lost and the id may not register again.`, [], "Remove", true);
        if (v) await act(ctx, () => call("DELETE", `/cluster/v1/agents/${enc(id)}`), `Removed ${agent.hostname}`, "/nodes");
      } }, "Remove"));
  }

  ctx.onRedraw(draw);
  await draw();
  return el("div", head, body);
}
