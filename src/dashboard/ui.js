// Small DOM helpers shared by every page: element building (text only, never HTML strings,
// so nothing from the API is ever parsed as markup), tables with paging, formatting, dialogs.

/** An element: `el("td#id.num", {title: "x"}, "text", child)`: an id after `#`, classes after dots. */
export function el(spec, attrs, ...children) {
  const [, tag, id, classes] = spec.match(/^([a-z0-9]*)(?:#([\w-]+))?((?:\.[\w-]+)*)$/i);
  const node = document.createElement(tag || "div");
  if (id) node.id = id;
  if (classes) node.className = classes.slice(1).replace(/\./g, " ");
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && key !== "list" && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child == null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

/** A link inside the dashboard (hash routes), reachable by keyboard like any link. */
export function link(route, text, cls) {
  return el("a" + (cls ? "." + cls : ""), { href: "#" + route }, text);
}

/** A route segment for an id that may hold `/` (app ids). */
export function enc(id) {
  return encodeURIComponent(id);
}

/** A state badge: the class is the state, so the palette colours it. */
export function badge(state, text) {
  const name = String(state || "unknown");
  return el("span.badge.s-" + name.replace(/[^A-Za-z0-9_-]/g, "_"), text || name.replace(/^TASK_/, "").toLowerCase());
}

/** A table of `rows` (arrays of cells) under `headers`; `empty` when there are none. */
export function table(headers, rows, empty, caption) {
  const head = el("thead", el("tr", headers.map(h => el("th", { scope: "col" }, h))));
  const body = el("tbody");
  if (!rows.length) body.append(el("tr", el("td.empty", { colSpan: headers.length }, empty || "none")));
  for (const row of rows) body.append(el("tr", row.map(c => c instanceof Node && c.tagName === "TD" ? c : el("td", c))));
  return el("div.table-wrap", el("table", caption ? el("caption.sr", caption) : null, head, body));
}

/** Rows shown per page of a long list: the page stays fast with thousands of tasks. */
export const PAGE_SIZE = 100;

/** `rows` one page at a time, with Previous/Next; `state.page` survives refreshes. */
export function paged(headers, rows, empty, state, rerender) {
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
  state.page = Math.min(state.page || 0, pages - 1);
  const start = state.page * PAGE_SIZE;
  const shown = rows.slice(start, start + PAGE_SIZE);
  const nav = pages > 1 ? el("div.pager",
    el("button", { type: "button", disabled: state.page === 0, onclick: () => { state.page--; rerender(); } }, "Previous"),
    el("span", `${start + 1}–${start + shown.length} of ${rows.length}`),
    el("button", { type: "button", disabled: state.page >= pages - 1, onclick: () => { state.page++; rerender(); } }, "Next")) : null;
  return el("div", table(headers, shown.map(r => r()), empty), nav);
}

export function section(title, ...children) {
  return el("section.card", el("h2", title), ...children);
}

/** A date as the viewer reads it (their time zone), or "—". */
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

/** "3 min ago" for an ISO date. */
export function ago(iso, now = Date.now()) {
  if (!iso) return "—";
  const s = Math.round((now - new Date(iso).getTime()) / 1000);
  if (isNaN(s)) return iso;
  const span = Math.abs(s);
  const text = span < 60 ? `${span} s` : span < 3600 ? `${Math.round(span / 60)} min` : span < 86400 ? `${Math.round(span / 3600)} h` : `${Math.round(span / 86400)} d`;
  return s >= 0 ? text + " ago" : "in " + text;
}

export function num(x, digits = 2) {
  return x == null ? "—" : Number(x).toFixed(digits).replace(/\.?0+$/, "") || "0";
}

export function mib(x) {
  if (x == null) return "—";
  return x >= 1024 ? num(x / 1024, 1) + " GiB" : num(x, 0) + " MiB";
}

export function bytes(x) {
  if (x == null) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (x >= 1024 && i < units.length - 1) { x /= 1024; i++; }
  return num(x, i ? 1 : 0) + " " + units[i];
}

/** A used/total bar with its figures, for resources. */
export function meter(used, total, text) {
  const ratio = total > 0 ? Math.min(1, used / total) : 0;
  const bar = el("span.meter-bar");
  bar.style.width = (ratio * 100).toFixed(1) + "%";
  return el("span.meter", { title: text, role: "img", "aria-label": text }, el("span.meter-track", bar), el("span.meter-text", text));
}

/** A short message at the bottom of the screen (role=status, read out by screen readers). */
export function toast(message, kind = "ok") {
  const host = document.getElementById("toasts");
  const item = el("div.toast.t-" + kind, { role: kind === "error" ? "alert" : "status" }, message);
  host.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 10000 : 4000);
}

/** A modal dialog (`<dialog>`: focus is kept inside, Escape closes). Resolves to the form's
 *  values when submitted with the OK button, or null when cancelled. */
export function ask(title, fields, okText = "OK", danger = false) {
  return new Promise(resolve => {
    const inputs = fields.map(f => {
      const input = f.options
        ? el("select", { name: f.name }, f.options.map(o => el("option", { value: o.value, selected: o.value === f.value }, o.label)))
        : el("input", { name: f.name, type: f.type || "text", value: f.value ?? "", min: f.min, max: f.max, step: f.step, required: f.required });
      return el("label.field", el("span", f.label), input, f.help ? el("small", f.help) : null);
    });
    const dialog = el("dialog.modal", { "aria-label": title });
    const form = el("form", { method: "dialog" },
      el("h2", title), ...inputs,
      el("div.actions",
        el("button", { type: "submit", value: "cancel", formNoValidate: true }, "Cancel"),
        el("button" + (danger ? ".danger" : ".primary"), { type: "submit", value: "ok" }, okText)));
    dialog.append(form);
    dialog.addEventListener("close", () => {
      const values = dialog.returnValue === "ok" ? Object.fromEntries(new FormData(form)) : null;
      dialog.remove();
      resolve(values);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** A key/value list (`<dl>`). */
export function facts(pairs) {
  return el("dl.facts", pairs.filter(p => p).flatMap(([k, v]) => [el("dt", k), el("dd", v == null || v === "" ? "—" : v)]));
}

/** Does an action (`request`), says `done` or the error, then moves to `then` (a route)
 *  or redraws the page. */
export async function act(ctx, request, done, then) {
  // No redraw while the action is under way: one after a removal was applied would ask for
  // what is gone (404s), and the page redraws right after anyway.
  ctx.busy++;
  try {
    await request();
  } catch (e) {
    ctx.busy--;
    toast(e.message, "error");
    return false;
  }
  toast(done);
  // Gone to its next page, unless the viewer left this one meanwhile.
  if (then) return ctx.signal.aborted || ctx.go(then), true;
  ctx.busy--;
  await ctx.redraw();
  return true;
}

/** `promise`'s failure said in a toast, unless the page was left (its requests abort). */
export function shown(ctx, promise) {
  return promise.catch(e => {
    if (!ctx.signal.aborted && e.name !== "AbortError") toast(e.message, "error");
  });
}
