// Frameworks: the built-in services and jobs frameworks and every Mesos framework, each with
// its role and weight, its dominant share of the cluster, what it uses and is offered, and
// (opened) its tasks.

import { get } from "../api.js";
import { el, link, enc, badge, table, section, num, mib, meter, when, shown } from "../ui.js";

export default async function frameworks(ctx) {
  const body = el("div.grid");
  const open = new Set();
  async function draw() {
    const list = await get("/cluster/v1/frameworks", ctx.signal);
    const cards = await Promise.all(list.map(async f => {
      const byState = Object.entries(f.tasksByState).map(([s, n]) => el("span.count", badge(s), " ", String(n)));
      // Filled once per draw: opening it fills it, and a draw fills those already open
      // (whose `toggle` event then finds them filled).
      let filled = false;
      const details = el("details", { open: open.has(f.id), ontoggle: ev => {
        if (!ev.target.open) return open.delete(f.id);
        open.add(f.id);
        if (!filled) shown(ctx, fill().catch(e => { filled = false; throw e; }));
      } }, el("summary", "Tasks"));
      async function fill() {
        filled = true;
        const full = await get("/cluster/v1/frameworks/" + enc(f.id), ctx.signal);
        details.replaceChildren(details.firstChild, table(["Task", "State", "Agent", "CPUs", "Memory"], (full.tasks || []).map(t => [
          link("/tasks/" + enc(t.taskId || t.id), t.id), badge(t.state), link("/nodes/" + enc(t.agentId), t.agentId), num(t.resources.cpus), mib(t.resources.mem)]),
        "No tasks."));
      }
      if (open.has(f.id)) await shown(ctx, fill());
      return section(f.name,
        el("p", badge(f.builtin ? "built-in" : f.state), " ", el("code", f.id), ` · role ${f.role} (weight ${f.weight})`,
          f.registeredAt ? ` · registered ${when(f.registeredAt)}` : ""),
        el("div.meters", el("div", el("span", "Dominant share"), meter(f.share, 1, (f.share * 100).toFixed(1) + " %"))),
        el("p", `Uses ${num(f.used.cpus)} CPUs and ${mib(f.used.mem)}`,
          f.offered.cpus ? `; offered ${num(f.offered.cpus)} CPUs and ${mib(f.offered.mem)}` : ""),
        el("p.counts", byState.length ? byState : el("span.muted", "no tasks")),
        details);
    }));
    body.replaceChildren(...cards);
  }
  ctx.onRedraw(draw);
  await draw();
  return el("div", el("div.page-head", el("h1", "Frameworks")), body);
}
