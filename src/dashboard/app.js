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

/** The navigation: drawn once, then only `aria-current` moves (the links keep focus). */
function drawNav(path) {
  const nav = document.getElementById("nav");
  if (!nav.children.length) nav.append(...NAV.map(([href, text]) => el("a", { href: "#" + href }, text)));
  NAV.forEach(([href], i) => {
    const active = href === "/" ? path === "/" : path === href || path.startsWith(href + "/");
    if (active) nav.children[i].setAttribute("aria-current", "page");
    else nav.children[i].removeAttribute("aria-current");
  });
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
    if (current !== ctx || e.status === 401) return;
    main.replaceChildren(e.status === 403
      ? el("section.card.error-page", { role: "alert" }, el("h1", "Not allowed"),
        el("p", "The API refused this page's data with 403: ", e.message),
        el("div.actions", el("button", { type: "button", onclick: () => history.back() }, "Back")))
      : el("section.card.error-page", el("h1", title), el("p.error", e.message)));
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
    /** Actions under way (`ui.act`): redraws wait for their end. */
    busy: 0,
    async redraw() {
      if (this.busy > 0) return;
      const focus = focusKey(document.activeElement);
      for (const fn of redraws) {
        try { await fn(); } catch (e) { if (!abort.signal.aborted && e.status !== 401) console.warn("redraw:", e.message); }
      }
      if (!abort.signal.aborted) refocus(focus);
    },
    leave() { abort.abort(); redraws.length = 0; },
    go(path) { location.hash = "#" + path; },
  };
}

/** What identifies a focused control across a redraw that rebuilt it: its kind, its
 *  words, and the heading of the section it is in. */
function focusKey(node) {
  if (!node || node === document.body || !document.getElementById("main").contains(node)) return null;
  const section = node.closest("section, .page-head");
  const heading = section && section.querySelector("h1, h2");
  return [node.tagName, node.getAttribute("aria-label") || node.textContent.trim().slice(0, 80), heading ? heading.textContent : ""].join("|");
}

/** Puts the focus back on the control a redraw replaced (keyboard users keep their place). */
function refocus(key) {
  // Only when the focus was lost with the rebuilt control, not moved elsewhere meanwhile.
  if (!key || (document.activeElement && document.activeElement !== document.body)) return;
  const [tag] = key.split("|");
  for (const node of document.getElementById("main").querySelectorAll(tag)) {
    if (focusKey(node) === key) { node.focus({ preventScroll: true }); return; }
  }
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

/** The event stream's state as the header shows it; back to live, the page is redrawn
 *  (events may have been missed meanwhile). */
function setLive(state) {
  const live = document.getElementById("live");
  const was = live.dataset.state;
  live.dataset.state = state;
  live.textContent = state === "live" ? "● live" : state === "waiting" ? "○ connecting…" : "○ reconnecting…";
  live.title = shared ? "events come through another tab of this dashboard" : "";
  live.className = "live " + (state === "live" ? "on" : "off");
  if (state === "live" && was && was !== "live") scheduleRedraw();
}
/** This tab gets its events from another one. */
let shared = false;

/** Events seen by this tab (or passed on by the tab that reads the stream). */
function onEvent(type, data) {
  if (type === "event_stream_attached") return;
  api.remember(type, data);
  scheduleRedraw();
}

/** One event stream for all of this origin's tabs: a browser keeps at most 6 connections
 *  to a host (HTTP/1.1), so each tab holding its own would starve the rest. The tab holding
 *  the lock reads it and passes every event on (BroadcastChannel); when it closes, another
 *  tab takes the lock over. Without Web Locks (an insecure context), each tab reads its own. */
function startEvents() {
  if (eventsAbort) eventsAbort.abort();
  eventsAbort = new AbortController();
  const signal = eventsAbort.signal;
  if (!navigator.locks || !window.BroadcastChannel) {
    api.followEvents(onEvent, setLive, signal);
    return;
  }
  const channel = new BroadcastChannel("dcos-rs-events");
  let holding = false;
  let state = "waiting";
  channel.onmessage = m => {
    if (m.data.hello) {
      // A new tab asks how the stream is: the holder says.
      if (holding) channel.postMessage({ state });
    } else if (m.data.state) {
      if (!holding) setLive(m.data.state);
    } else {
      onEvent(m.data.type, m.data.data);
    }
  };
  signal.addEventListener("abort", () => channel.close(), { once: true });
  shared = true;
  setLive("waiting");
  channel.postMessage({ hello: true });
  navigator.locks.request("dcos-rs-events", { signal }, () => {
    holding = true;
    shared = false;
    // Events may have passed while no tab read the stream: redrawn once it is live.
    setLive("waiting");
    return api.followEvents((type, data) => {
      onEvent(type, data);
      channel.postMessage({ type, data });
    }, next => {
      state = next;
      setLive(next);
      channel.postMessage({ state: next });
    }, signal);
  }).catch(() => {});
}

function showLogin(message) {
  // Already asking (several requests were refused at once): keep what the user typed.
  const asking = document.getElementById("login-error");
  if (asking) {
    asking.textContent = message;
    return;
  }
  if (current) current.leave();
  current = null;
  if (eventsAbort) eventsAbort.abort();
  eventsAbort = null;
  document.title = "Log in · dcos-rs";
  const input = el("input#token", { type: "password", autocomplete: "off", placeholder: "dcos_…", required: true, "aria-describedby": "login-help" });
  const error = el("p#login-error.error", { role: "alert" }, message);
  const form = el("form.login", {
    onsubmit: async ev => {
      ev.preventDefault();
      api.setToken(input.value.trim());
      input.value = "";
      try {
        await api.get("/cluster/v1/nodes");
      } catch (e) {
        // A 401 has said why through showLogin; anything else is said here.
        if (e.status !== 401) {
          api.setToken(null);
          error.textContent = "The API cannot be reached: " + e.message;
        }
        return;
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
  const had = api.token();
  // The other requests refused with the same token have nothing to add.
  if (!had && document.getElementById("login-error")) return;
  api.setToken(null);
  showLogin(had ? "The token was refused (" + error.message + "). Paste a valid one." : "This cluster asks for an API token.");
});

document.getElementById("logout").addEventListener("click", () => {
  api.setToken(null);
  showLogin("Logged out.");
});

api.takeTokenFromAddress();
// The skip link moves the focus to the page (its `#main` is no route).
document.querySelector("a.skip").addEventListener("click", ev => {
  ev.preventDefault();
  document.getElementById("main").focus();
});
window.addEventListener("hashchange", () => {
  if (!location.hash || location.hash.startsWith("#/")) show();
});
setInterval(() => { if (current && document.visibilityState === "visible") current.redraw(); }, REDRAW_IDLE_MS);
if (api.token()) startEvents();
show();
