// The jobs' dependency graph (Chronos's parents), drawn as layers left to right: a job sits
// one column after its deepest parent. Each box links to its job's page.

const SVG = "http://www.w3.org/2000/svg";
const BOX_W = 170, BOX_H = 34, GAP_X = 60, GAP_Y = 16, PAD = 8;

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** The jobs connected to `focus` through parents or children, with each one's column. */
export function layout(jobs, focus) {
  const byId = new Map(jobs.map(j => [j.id, j]));
  const children = new Map();
  for (const j of jobs) for (const p of j.parents || []) {
    if (!children.has(p)) children.set(p, []);
    children.get(p).push(j.id);
  }
  const seen = new Set([focus]);
  const todo = [focus];
  while (todo.length) {
    const id = todo.pop();
    const next = ((byId.get(id) || {}).parents || []).concat(children.get(id) || []);
    for (const n of next) if (!seen.has(n) && byId.has(n)) { seen.add(n); todo.push(n); }
  }
  const depth = new Map();
  const depthOf = (id, guard = 0) => {
    if (depth.has(id)) return depth.get(id);
    if (guard > jobs.length) return 0; // a cycle cannot be stored, but never loop on one
    const parents = ((byId.get(id) || {}).parents || []).filter(p => seen.has(p));
    const d = parents.length ? 1 + Math.max(...parents.map(p => depthOf(p, guard + 1))) : 0;
    depth.set(id, d);
    return d;
  };
  const columns = [];
  for (const id of [...seen].sort()) {
    const d = depthOf(id);
    (columns[d] = columns[d] || []).push(id);
  }
  const position = new Map();
  columns.forEach((ids, c) => ids.forEach((id, r) => position.set(id, { x: PAD + c * (BOX_W + GAP_X), y: PAD + r * (BOX_H + GAP_Y) })));
  const edges = [];
  for (const id of seen) for (const p of (byId.get(id).parents || [])) if (seen.has(p)) edges.push([p, id]);
  return { position, edges, columns: columns.length, rows: Math.max(1, ...columns.map(c => c.length)) };
}

/** The graph around `focus` as an SVG element, or null when the job has no relatives. */
export function jobGraph(jobs, focus, statusOf) {
  const { position, edges, columns, rows } = layout(jobs, focus);
  if (position.size <= 1) return null;
  const width = PAD * 2 + columns * BOX_W + (columns - 1) * GAP_X;
  const height = PAD * 2 + rows * BOX_H + (rows - 1) * GAP_Y;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "graph", role: "group", "aria-label": "Dependency graph of " + focus });
  const defs = svg("defs", {});
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
  defs.append(marker);
  root.append(defs);
  for (const [from, to] of edges) {
    const a = position.get(from), b = position.get(to);
    const x1 = a.x + BOX_W, y1 = a.y + BOX_H / 2, x2 = b.x, y2 = b.y + BOX_H / 2;
    const mid = (x1 + x2) / 2;
    root.append(svg("path", { d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`, class: "edge", "marker-end": "url(#arrow)" }));
  }
  for (const [id, p] of position) {
    const link = svg("a", { href: "#/jobs/" + encodeURIComponent(id), class: "node" + (id === focus ? " focus" : "") + " st-" + (statusOf(id) || "none") });
    const title = svg("title", {});
    title.textContent = id + (statusOf(id) ? " (last run " + statusOf(id).toLowerCase() + ")" : "");
    link.append(title, svg("rect", { x: p.x, y: p.y, width: BOX_W, height: BOX_H, rx: 6 }));
    const text = svg("text", { x: p.x + BOX_W / 2, y: p.y + BOX_H / 2 + 4, "text-anchor": "middle" });
    text.textContent = id.length > 22 ? id.slice(0, 21) + "…" : id;
    link.append(text);
    root.append(link);
  }
  return root;
}
