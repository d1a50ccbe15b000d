// The master's API as the dashboard calls it: the token (sessionStorage, this tab only),
// JSON requests with errors that keep the server's field details, the event stream (read
// with fetch, since EventSource cannot send a token), and streamed task logs.
//
// Any master serves the page: reads come from the master asked, writes are passed on to
// the leader by a follower (the API does that), so the page never needs to know who leads.

const TOKEN_KEY = "dcos-rs-token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** The login link's token (`dcos-rs up` prints /?token=…): kept for this tab, then dropped
 *  from the address bar and history. */
export function takeTokenFromAddress() {
  const params = new URLSearchParams(location.search);
  if (!params.has("token")) return;
  const value = params.get("token").trim();
  if (value) setToken(value);
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
}

/** An answer other than 2xx: `status`, the server's `message` and field `details`. */
export class ApiError extends Error {
  constructor(status, body, path) {
    super(body && body.message ? body.message : `${path}: HTTP ${status}`);
    this.status = status;
    this.details = (body && Array.isArray(body.details)) ? body.details : [];
    this.path = path;
  }
}

/** Told when a request is refused for its credentials (401). */
let onAuthFailure = () => {};
export function whenUnauthorized(handler) {
  onAuthFailure = handler;
}

function headers(extra) {
  // X-Requested-With: the API then sends no Basic challenge, which would open the
  // browser's own password dialog over this page.
  const h = { "Accept": "application/json", "X-Requested-With": "dcos-rs-dashboard", ...extra };
  const t = token();
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}

/** A request; JSON in and out. Rejects with `ApiError`. */
export async function call(method, path, body, signal) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }), signal };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  const response = await fetch(path, init);
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (response.status === 401) {
    const error = new ApiError(response.status, json, path);
    onAuthFailure(error);
    throw error;
  }
  // A 403 is about this request (every token is an admin; an agent refuses a symbolic
  // link with it): shown where it happened, not as a login problem.
  if (!response.ok) throw new ApiError(response.status, json, path);
  return json;
}

export const get = (path, signal) => call("GET", path, undefined, signal);

/** Follows the event stream (`/cluster/v1/events`), calling `onEvent(type, data)` for each
 *  event and `onState("live"|"reconnecting")`; reconnects with a growing pause (1 s to
 *  15 s) until `signal` aborts. */
export async function followEvents(onEvent, onState, signal) {
  let pause = 1000;
  while (!signal.aborted) {
    try {
      const response = await fetch("/cluster/v1/events", { headers: headers({ "Accept": "text/event-stream" }), signal });
      if (response.status === 401) {
        onAuthFailure(new ApiError(response.status, null, "/cluster/v1/events"));
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      onState("live");
      pause = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let type = "message", data = "";
          for (const line of frame.split("\n")) {
            if (line.startsWith("event:")) type = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (!data) continue;
          let parsed = null;
          try { parsed = JSON.parse(data); } catch { continue; }
          onEvent(type, parsed);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    onState("reconnecting");
    await sleep(pause, signal);
    pause = Math.min(pause * 2, 15000);
  }
}

/** Streams a task's `stream` (stdout|stderr) through the master from byte `offset`,
 *  following while the task runs: `onText(text)` per chunk, decoded by `decoder` (one per
 *  log, so a character split between two follows comes out whole). Resolves with the
 *  offset reached when the master ends the stream (the task ended, or the follow's time
 *  limit: ask again from there). */
export async function followLog(taskId, stream, offset, decoder, onText, signal) {
  const path = `/cluster/v1/tasks/${encodeURIComponent(taskId)}/logs/${stream}?follow=true&offset=${offset}`;
  const response = await fetch(path, { headers: headers({ "Accept": "text/plain" }), signal });
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    throw new ApiError(response.status, body, path);
  }
  const reader = response.body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return offset;
    offset += value.byteLength;
    onText(decoder.decode(value, { stream: true }));
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise(resolve => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/** The latest events this page has seen since it was opened, newest first (the overview
 *  lists them). */
export const recentEvents = [];
const RECENT_EVENTS_MAX = 50;

export function remember(type, data) {
  recentEvents.unshift({ type, data, at: data.timestamp || new Date().toISOString() });
  recentEvents.length = Math.min(recentEvents.length, RECENT_EVENTS_MAX);
}
