// A JSON editor for app and job definitions: a plain textarea (keyboard, paste, undo work as
// everywhere) over a backdrop that marks the lines with errors. Errors come from parsing in
// the page (line and column) and from the API's field details (`{"path": "/cpus",
// "errors": [...]}`), each shown next to the line of that field; choosing one moves the
// cursor there.

import { el } from "./ui.js";

/** Where each JSON pointer of `text` starts: `{"/cpus": line, "/env/A": line, ...}`
 *  (1-based lines; "" is the document). Tolerates text that does not parse: it stops there. */
export function fieldLines(text) {
  const lines = { "": 1 };
  const stack = []; // {kind: "obj"|"arr", key, index}
  let line = 1;
  let expectKey = false;
  let pendingKey = null;
  const path = extra => "/" + stack.slice(1).map(f => f.name).concat(extra == null ? [] : [extra]).join("/");
  const startValue = () => {
    const top = stack[stack.length - 1];
    if (top && top.kind === "arr") {
      const name = String(top.index);
      if (!(path(name) in lines)) lines[path(name)] = line;
    }
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "\n") { line++; continue; }
    if (c === "\"") {
      let j = i + 1, value = "";
      while (j < text.length && text[j] !== "\"") {
        if (text[j] === "\\") { value += text[j + 1] || ""; j += 2; continue; }
        if (text[j] === "\n") line++;
        value += text[j++];
      }
      if (expectKey) {
        pendingKey = value.replace(/~/g, "~0").replace(/\//g, "~1");
        lines[path(pendingKey)] = line;
        expectKey = false;
      } else {
        startValue();
      }
      i = j;
      continue;
    }
    if (c === "{" || c === "[") {
      startValue();
      const top = stack[stack.length - 1];
      const name = !top ? "" : top.kind === "obj" ? pendingKey : String(top.index);
      stack.push({ kind: c === "{" ? "obj" : "arr", name, index: 0 });
      expectKey = c === "{";
      continue;
    }
    if (c === "}" || c === "]") { stack.pop(); expectKey = false; continue; }
    if (c === ",") {
      const top = stack[stack.length - 1];
      if (top && top.kind === "arr") top.index++;
      expectKey = top && top.kind === "obj";
      continue;
    }
    if (c === ":") continue;
    if (!/\s/.test(c)) {
      startValue();
      while (i + 1 < text.length && /[^,\]}\s]/.test(text[i + 1])) i++;
    }
  }
  return lines;
}

/** The line of `pointer` in `text`, or of its nearest parent that is there. */
export function lineOf(text, pointer) {
  const lines = fieldLines(text);
  // Marathon names array items `/portDefinitions(0)/port`; a JSON pointer `/portDefinitions/0/port`.
  let p = (pointer || "").replace(/\((\d+)\)/g, "/$1");
  while (!(p in lines)) p = p.slice(0, Math.max(0, p.lastIndexOf("/")));
  return lines[p];
}

/** Where a JSON.parse error points, as a line: Chromium says "... at position N ...". */
function parseErrorLine(text, error) {
  const m = /position (\d+)/.exec(error.message);
  if (!m) return 1;
  return text.slice(0, Number(m[1])).split("\n").length;
}

/** The editor: `submit(value)` is called with the parsed JSON and may reject with an
 *  ApiError whose `details` name fields. Returns `{node, setText}`. */
export function jsonEditor(text, submitText, submit) {
  const backdrop = el("pre.editor-backdrop", { "aria-hidden": "true" });
  const area = el("textarea.editor-text", { spellcheck: "false", rows: 22, "aria-label": "Definition (JSON)", autocapitalize: "off", autocomplete: "off" });
  area.value = text;
  const errors = el("ul.editor-errors", { role: "alert", "aria-live": "assertive" });
  const button = el("button.primary", { type: "submit" }, submitText);
  let marked = new Map();

  function drawBackdrop() {
    const lines = area.value.split("\n");
    backdrop.replaceChildren(...lines.map((l, i) => el("span" + (marked.has(i + 1) ? ".err-line" : ""), l + "\n")));
    backdrop.scrollTop = area.scrollTop;
    backdrop.scrollLeft = area.scrollLeft;
  }

  function show(list) {
    marked = new Map(list.map(e => [e.line, e]));
    errors.replaceChildren(...list.map(e => el("li", el("button.linklike", {
      type: "button",
      onclick: () => jumpTo(e.line),
    }, `line ${e.line}`), " ", el("code", e.field || "JSON"), ": ", e.message)));
    area.setAttribute("aria-invalid", list.length ? "true" : "false");
    drawBackdrop();
  }

  function jumpTo(line) {
    const lines = area.value.split("\n");
    const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
    area.focus();
    area.setSelectionRange(start, start + (lines[line - 1] || "").length);
    const lineHeight = parseFloat(getComputedStyle(area).lineHeight) || 18;
    area.scrollTop = Math.max(0, (line - 3) * lineHeight);
  }

  area.addEventListener("input", () => { if (marked.size) show([]); else drawBackdrop(); });
  area.addEventListener("scroll", () => { backdrop.scrollTop = area.scrollTop; backdrop.scrollLeft = area.scrollLeft; });
  area.addEventListener("keydown", ev => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) form.requestSubmit();
  });

  const form = el("form.editor", {
    onsubmit: async ev => {
      ev.preventDefault();
      let value;
      try {
        value = JSON.parse(area.value);
      } catch (e) {
        show([{ line: parseErrorLine(area.value, e), field: "", message: "not valid JSON: " + e.message }]);
        return;
      }
      button.disabled = true;
      try {
        await submit(value);
        show([]);
      } catch (e) {
        const details = (e.details || []).flatMap(d => (d.errors || []).map(msg => ({
          line: lineOf(area.value, d.path), field: d.path || "", message: msg,
        })));
        show(details.length ? details : [{ line: 1, field: "", message: e.message }]);
      } finally {
        button.disabled = false;
      }
    },
  },
    el("div.editor-box", backdrop, area),
    errors,
    el("div.actions", button, el("small.hint", "Ctrl+Enter submits. Tab leaves the editor.")));
  drawBackdrop();
  return { node: form, setText(t) { area.value = t; show([]); } };
}
