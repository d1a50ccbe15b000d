// The dashboard's shell: hash routes to pages, the login page, and live updates. Each page
// renders once per visit and registers what to redraw when the cluster changes; changes
// arrive on the event stream and are coalesced (at most one redraw per REDRAW_MIN_MS), so a
// burst of task updates never turns into a burst of requests.

import * as api from "./api.js";
import { el } from "./ui.js";
import overview from "./pages/overview.js";
import * as services from "./pages/services.js";
import * as tasks from "./pages/tasks.js";
import * as jobs from "./pages/jobs.js";
import frameworks from "./pages/frameworks.js";
import * as nodes from "./pages/nodes.js";

/** Shortest time between two redraws caused by events. */
const REDRAW_MIN_MS = 700;
/** Redraw this often without events too (heartbeat ages, usage samples). */
const REDRAW_IDLE_MS = 15000;

const ROUTES = [
  [/^\/?$/, overview, "Overview"],
  [/^\/services$/, services.list, "Services"],
  [/^\/services\/new$/, services.create, "Deploy a service"],
  [/^\/services\/(.+)$/, services.detail, "Service"],
  [/^\/tasks$/, tasks.list, "Tasks"],
  [/^\/tasks\/(.+)$/, tasks.detail, "Task"],
  [/^\/jobs$/, jobs.list, "Jobs"],
  [/^\/jobs\/new$/, jobs.create, "New job"],
  [/^\/jobs\/(.+)$/, jobs.detail, "Job"],
  [/^\/frameworks$/, frameworks, "Frameworks"],
  [/^\/nodes$/, nodes.list, "Nodes"],
  [/^\/nodes\/(.+)$/, nodes.detail, "Node"],
];

const NAV = [["/", "Overview"], ["/services", "Services"], ["/tasks", "Tasks"], ["/jobs", "Jobs"], ["/frameworks", "Frameworks"], ["/nodes", "Nodes"]];

/** The page on screen: its redraw functions, and what to stop when it is left. */
let current = null;
let redrawTimer = null;
let lastRedraw = 0;
let eventsAbort = null;

/** The route in the address (`#/tasks?state=TASK_RUNNING`): its path and its query. */
function route() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  return { path: path || "/", query: new URLSearchParams(query || "") };
}

function drawNav(path) {
  const nav = document.getElementById("nav");
  nav.replaceChildren(...NAV.map(([href, text]) => {
    const active = href === "/" ? path === "/" : path === href || path.startsWith(href + "/");
    return el("a", { href: "#" + href, "aria-current": active ? "page" : null }, text);
  }));
}

async function show() {
  const { path, query } = route();
  drawNav(path);
  if (current) current.leave();
  const main = document.getElementById("main");
  if (!api.token()) return showLogin("This cluster asks for an API token.");
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  const ctx = makeContext(query);
  current = ctx;
  if (!found) {
    main.replaceChildren(el("section.card", el("h1", "Not found"), el("p", "No page at ", el("code", path), ".")));
    return;
  }
  const [pattern, page, title] = found;
  const params = (path.match(pattern) || []).slice(1).map(decodeURIComponent);
  document.title = title + " · dcos-rs";
  main.replaceChildren(el("p.loading", "Loading…"));
  try {
    const node = await page(ctx, ...params);
    if (current !== ctx) return;
    main.replaceChildren(node);
  } catch (e) {
    if (current !== ctx || e.status === 401 || e.status === 403) return;
    main.replaceChildren(el("section.card.error-page", el("h1", title), el("p.error", e.message)));
  }
}

/** What a page gets: `onRedraw(fn)` to be called on changes, `signal` aborted when left,
 *  `query` of its route, `go(path)` to move to another page. */
function makeContext(query) {
  const abort = new AbortController();
  const redraws = [];
  return {
    signal: abort.signal,
    query,
    onRedraw(fn) { redraws.push(fn); },
    async redraw() {
      for (const fn of redraws) {
        try { await fn(); } catch (e) { if (!abort.signal.aborted && e.status !== 401) console.warn("redraw:", e.message); }
      }
    },
    leave() { abort.abort(); redraws.length = 0; },
    go(path) { location.hash = "#" + path; },
  };
}

/** Asks for a redraw of the page on screen, at most once per REDRAW_MIN_MS. */
function scheduleRedraw() {
  if (redrawTimer) return;
  const wait = Math.max(0, lastRedraw + REDRAW_MIN_MS - Date.now());
  redrawTimer = setTimeout(async () => {
    redrawTimer = null;
    lastRedraw = Date.now();
    if (current) await current.redraw();
  }, wait);
}

function setLive(state) {
  const live = document.getElementById("live");
  live.textContent = state === "live" ? "● live" : "○ reconnecting…";
  live.className = "live " + (state === "live" ? "on" : "off");
}

function startEvents() {
  if (eventsAbort) eventsAbort.abort();
  eventsAbort = new AbortController();
  api.followEvents((type, data) => {
    if (type === "event_stream_attached") return;
    api.remember(type, data);
    scheduleRedraw();
  }, setLive, eventsAbort.signal);
}

function showLogin(message) {
  if (current) current.leave();
  current = null;
  if (eventsAbort) eventsAbort.abort();
  eventsAbort = null;
  document.title = "Log in · dcos-rs";
  const input = el("input#token", { type: "password", autocomplete: "off", placeholder: "dcos_…", required: true, "aria-describedby": "login-help" });
  const error = el("p.error", { role: "alert" }, message);
  const form = el("form.login", {
    onsubmit: async ev => {
      ev.preventDefault();
      api.setToken(input.value.trim());
      input.value = "";
      try {
        await api.get("/cluster/v1/nodes");
      } catch (e) {
        return; // showLogin ran again with the reason
      }
      startEvents();
      show();
    },
  },
    el("h1", "Log in"),
    error,
    el("p#login-help", "Paste an API token: open the link ", el("code", "dcos-rs up"), " printed, or use ",
      el("code", "<data-dir>/admin.token"), " of ", el("code", "dcos-rs up"), ", or the ", el("code", "token"),
      " in the cli.toml that ", el("code", "dcos-rs install"), " or ", el("code", "dcos-rs cluster setup"), " wrote."),
    el("label.field", el("span", "API token"), input),
    el("div.actions", el("button.primary", { type: "submit" }, "Log in")));
  document.getElementById("main").replaceChildren(el("section.card.login-page", form));
  input.focus();
}

api.whenUnauthorized(error => {
  if (error.status === 403) {
    // The token is valid but may not do this: say so in place of the page.
    if (current) current.leave();
    current = null;
    document.getElementById("main").replaceChildren(el("section.card.error-page", { role: "alert" },
      el("h1", "Not allowed"),
      el("p", "The API refused this with 403: ", error.message),
      el("div.actions",
        el("button", { type: "button", onclick: () => history.back() }, "Back"),
        el("button.primary", { type: "button", onclick: () => { api.setToken(null); showLogin("Log in with another token."); } }, "Use another token"))));
    return;
  }
  const had = api.token();
  api.setToken(null);
  showLogin(had ? "The token was refused (" + error.message + "). Paste a valid one." : "This cluster asks for an API token.");
});

document.getElementById("logout").addEventListener("click", () => {
  api.setToken(null);
  showLogin("Logged out.");
});

api.takeTokenFromAddress();
window.addEventListener("hashchange", show);
setInterval(() => { if (current && document.visibilityState === "visible") current.redraw(); }, REDRAW_IDLE_MS);
if (api.token()) startEvents();
show();
