// Tasks: every task, filtered by text and state, a page at a time; a task's page with its
// timeline, resources and live usage, its sandbox's files, and its log (stdout or stderr)
// followed live through the master.

import { get, followLog, sleep } from "../api.js";
import { el, link, enc, badge, paged, section, facts, num, mib, bytes, when, ago, table } from "../ui.js";

const STATES = ["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING", "TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR", "TASK_UNREACHABLE", "TASK_GONE"];
/** The most log text kept on screen; older text is dropped from the top. */
const LOG_KEPT_CHARS = 256 * 1024;
/** Shortest and longest pause before following a log again (longer while nothing new came). */
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30000;
/** The most of a sandbox file shown. */
const FILE_SHOWN_BYTES = 64 * 1024;
const TERMINAL = ["TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR", "TASK_GONE", "TASK_DROPPED", "TASK_GONE_BY_OPERATOR"];

export async function list(ctx) {
  const text = el("input", { type: "search", placeholder: "Filter by task, app or host", "aria-label": "Filter tasks", value: ctx.query.get("q") || "" });
  const state = el("select", { "aria-label": "State" }, el("option", { value: "" }, "Any state"),
    STATES.map(s => el("option", { value: s, selected: ctx.query.get("state") === s }, s.replace("TASK_", "").toLowerCase())));
  const body = el("div");
  const pageState = { page: 0 };
  let tasks = [];
  function render() {
    const q = text.value.trim().toLowerCase();
    const rows = tasks
      .filter(t => (!state.value || t.state === state.value) && (!q || t.id.toLowerCase().includes(q) || t.owner.id.toLowerCase().includes(q) || t.host.toLowerCase().includes(q)))
      .sort((a, b) => (b.stagedAt || "").localeCompare(a.stagedAt || ""))
      .map(t => () => [link("/tasks/" + enc(t.id), t.id), ownerLink(t), badge(t.state), t.host,
        num(t.cpus), mib(t.mem), t.startedAt ? ago(t.startedAt) : "—", el("span.clip", t.message || "")]);
    body.replaceChildren(el("p.summary", `${rows.length} of ${tasks.length} task(s)`),
      paged(["Task", "Owner", "State", "Host", "CPUs", "Memory", "Started", "Message"], rows, "No task matches.", pageState, render));
  }
  async function draw() {
    ({ tasks } = await get("/cluster/v1/tasks", ctx.signal));
    render();
  }
  text.addEventListener("input", () => { pageState.page = 0; render(); });
  state.addEventListener("change", () => { pageState.page = 0; render(); });
  ctx.onRedraw(draw);
  await draw();
  return el("div", el("div.page-head", el("h1", "Tasks")), el("div.toolbar", text, state), body);
}

export async function detail(ctx, id) {
  const head = el("div.page-head");
  const summary = el("div.grid");
  const usageBox = el("div");
  const filesBox = el("div");
  let task = null;
  let sandboxPath = "";
  /** Counts listings asked for: an answer that is not the latest is dropped. */
  let listing = 0;
  const log = logViewer(ctx, id, () => task && !TERMINAL.includes(task.state));
  let started = false;

  async function draw() {
    const { tasks } = await get("/cluster/v1/tasks", ctx.signal);
    task = tasks.find(t => t.id === id);
    if (!task) {
      head.replaceChildren(el("h1", el("span.muted", "Task "), id));
      summary.replaceChildren(el("p.empty", "This task is not known (any more): ended tasks are kept for a while, then forgotten."));
      return;
    }
    head.replaceChildren(el("h1", el("span.muted", "Task "), task.id), badge(task.state));
    // A staging task has not reached its agent yet: no log, no sandbox until it has.
    if (!started && task.state !== "TASK_STAGING") {
      started = true;
      log.follow("stdout");
      drawFiles(sandboxPath);
    }
    summary.replaceChildren(
      section("Summary", facts([
        ["Owner", ownerLink(task)],
        ["Agent", link("/nodes/" + enc(task.slaveId), `${task.host} (${task.slaveId})`)],
        ["Resources", `${num(task.cpus)} CPUs, ${mib(task.mem)} memory`],
        ["Ports", (task.ports || []).join(", ") || "none"],
        ["Version", when(task.version)],
        task.exitCode != null ? ["Exit code", String(task.exitCode)] : null,
        task.message ? ["Message", task.message] : null,
        task.killRequested ? ["Kill", "requested"] : null,
      ])),
      section("Status history", table(["When", "State"], timeline(task), "")));
    await drawUsage();
  }

  async function drawUsage() {
    if (!task || !["TASK_RUNNING", "TASK_STARTING", "TASK_KILLING"].includes(task.state)) {
      usageBox.replaceChildren();
      return;
    }
    try {
      const usage = await get(`/cluster/v1/tasks/${enc(id)}/usage`, ctx.signal);
      usageBox.replaceChildren(section("Live usage", facts(usageFacts(usage))));
    } catch (e) {
      usageBox.replaceChildren(section("Live usage", el("p.empty", e.message)));
    }
  }

  async function drawFiles(path) {
    sandboxPath = path;
    const mine = ++listing;
    try {
      const entries = await get(`/cluster/v1/tasks/${enc(id)}/files?path=${encodeURIComponent(path)}`, ctx.signal);
      if (mine !== listing) return;
      const up = path ? [[el("button.linklike", { type: "button", onclick: () => drawFiles(path.split("/").slice(0, -1).join("/")) }, ".."), "", "", ""]] : [];
      const rows = up.concat(entries.map(e => {
        const name = e.path.split("/").pop();
        const isDir = e.mode.startsWith("d");
        // A symbolic link is listed but never followed (the agent refuses it).
        const open = e.mode.startsWith("l") ? el("span", name + " (symbolic link)")
          : isDir ? el("button.linklike", { type: "button", onclick: () => drawFiles(e.path) }, name + "/")
            : el("button.linklike", { type: "button", onclick: () => showFile(e.path, e.size) }, name);
        return [open, isDir ? "—" : bytes(e.size), e.mode, when(new Date(e.mtime * 1000).toISOString())];
      }));
      filesBox.replaceChildren(section("Sandbox" + (path ? ": " + path : ""), table(["Name", "Size", "Mode", "Modified"], rows, "Empty."), el("div#file-view")));
    } catch (e) {
      if (mine !== listing || ctx.signal.aborted) return;
      filesBox.replaceChildren(section("Sandbox", el("p.empty", e.status === 404 && TERMINAL.includes(task.state)
        ? "The sandbox is gone: the task ended and its agent removed it." : e.message)));
    }
  }

  async function showFile(path, size) {
    const view = filesBox.querySelector("#file-view");
    try {
      const read = await get(`/cluster/v1/tasks/${enc(id)}/files/read?path=${encodeURIComponent(path)}&offset=0&length=${FILE_SHOWN_BYTES}`, ctx.signal);
      view.replaceChildren(el("h3", path + (size > FILE_SHOWN_BYTES ? ` (the first ${bytes(FILE_SHOWN_BYTES)} of ${bytes(size)})` : "")),
        el("pre.file", { tabIndex: 0 }, read.data || "(empty)"));
    } catch (e) {
      view.replaceChildren(el("p.error", e.message));
    }
  }

  ctx.onRedraw(draw);
  await draw();
  return el("div", head, summary, usageBox, log.node, filesBox);
}

/** Where a task's owner is shown: its service, its job, or its framework. */
export function ownerLink(task) {
  const owner = task.owner;
  if (owner.kind === "service") return link("/services/" + enc(owner.id), owner.id);
  if (owner.kind === "job") return el("span", "job ", link("/jobs/" + enc(owner.id), owner.id));
  return el("span", "framework ", link("/frameworks", owner.id));
}

/** The task's known moments: staged, started, and (for an ended task) its end. */
function timeline(task) {
  const rows = [[when(task.stagedAt), badge("TASK_STAGING")]];
  if (task.startedAt) rows.push([when(task.startedAt), badge("TASK_RUNNING")]);
  if (!["TASK_STAGING", "TASK_RUNNING"].includes(task.state)) rows.push([task.updatedAt ? when(task.updatedAt) : "—", badge(task.state)]);
  return rows;
}

function usageFacts(usage) {
  const pairs = [];
  for (const [key, value] of Object.entries(usage)) {
    if (["taskId", "agentId"].includes(key)) continue;
    const label = key.replace(/([A-Z])/g, " $1").replace(/^./, c => c.toUpperCase());
    let shown = value;
    if (typeof value === "number" && /bytes/i.test(key)) shown = bytes(value);
    else if (typeof value === "number") shown = num(value, 3);
    else if (key === "sampledAt") shown = when(value);
    else if (typeof value === "object") shown = JSON.stringify(value);
    pairs.push([label, String(shown)]);
  }
  return pairs;
}

/** The log, followed once `follow(stream)` is called: stdout or stderr from its last
 *  LOG_KEPT_CHARS, appended as it comes, scrolled along while the viewer is at the bottom;
 *  followed again from where it was when the master ends a long follow. `live()` says
 *  whether the task still runs. */
function logViewer(ctx, id, live) {
  const out = el("pre.log", { tabIndex: 0, "aria-label": "Task log", "aria-live": "off" });
  const status = el("span.hint", { role: "status" });
  let abort = null;
  const buttons = ["stdout", "stderr"].map(stream => el("button", {
    type: "button", "aria-pressed": "false",
    onclick: () => follow(stream),
  }, stream));
  const append = text => {
    const atBottom = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
    out.textContent = (out.textContent + text).slice(-LOG_KEPT_CHARS);
    if (atBottom) out.scrollTop = out.scrollHeight;
  };
  async function follow(stream) {
    if (abort) abort.abort();
    abort = new AbortController();
    const mine = abort;
    ctx.signal.addEventListener("abort", () => mine.abort(), { once: true });
    buttons.forEach(b => b.setAttribute("aria-pressed", String(b.textContent === stream)));
    out.textContent = "";
    status.textContent = "following " + stream + "…";
    const decoder = new TextDecoder();
    let offset = null;
    let pause = RETRY_MIN_MS;
    while (!mine.signal.aborted) {
      try {
        // Where to (re)start: the end of a long log less what is kept on screen; after a
        // rotation (the file is shorter than what was read), the new file's start.
        const size = await logSize(stream, mine.signal);
        if (offset === null || size < offset) {
          if (offset !== null) append("\n… (the log was rotated)\n");
          offset = Math.max(0, size - LOG_KEPT_CHARS);
          if (offset) append(`… (${bytes(offset)} before this)\n`);
        }
        const reached = await followLog(id, stream, offset, decoder, append, mine.signal);
        pause = reached > offset ? RETRY_MIN_MS : Math.min(pause * 2, RETRY_MAX_MS);
        offset = reached;
        if (!live()) {
          append(decoder.decode());
          status.textContent = stream + ": the task has ended; this is all of it.";
          return;
        }
        status.textContent = "following " + stream + "…";
      } catch (e) {
        if (mine.signal.aborted) return;
        if (!live() || (e.status >= 400 && e.status < 500)) {
          status.textContent = e.status === 404 && !live()
            ? "The log is gone: the task ended and its agent removed its sandbox."
            : e.message;
          return;
        }
        // An agent restarting, a master at its follow limit: ask again while the task runs.
        status.textContent = e.message + " (trying again)";
        pause = Math.min(pause * 2, RETRY_MAX_MS);
      }
      await sleep(pause, mine.signal);
    }
  }
  /** The log's size now; 0 while its file is not there yet (the follow waits for it). */
  async function logSize(stream, signal) {
    try {
      return (await get(`/cluster/v1/tasks/${enc(id)}/files/read?path=${stream}&offset=-1`, signal)).offset;
    } catch (e) {
      if (e.status === 404 && live()) return 0;
      throw e;
    }
  }
  status.textContent = "the log is shown once the task has reached its agent";
  return { node: section("Log", el("div.tabs", { role: "group", "aria-label": "Log stream" }, buttons, status), out), follow };
}
