// A small line chart (SVG) of percentages over time: the overview's resource use over the
// last hour. Drawn with DOM calls, no library.

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** `series`: [{name, cls, points: [[timeMs, percent]]}] over [fromMs, toMs]. */
export function lineChart(series, fromMs, toMs, label) {
  const width = 600, height = 140, pad = 24;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": label });
  const x = t => pad + (width - 2 * pad) * (toMs > fromMs ? (t - fromMs) / (toMs - fromMs) : 1);
  const y = p => height - pad - (height - 2 * pad) * Math.max(0, Math.min(100, p)) / 100;
  for (const p of [0, 50, 100]) {
    root.append(svg("line", { x1: pad, x2: width - pad, y1: y(p), y2: y(p), class: "grid" }));
    const text = svg("text", { x: 2, y: y(p) + 4, class: "axis" });
    text.textContent = p + "%";
    root.append(text);
  }
  const left = svg("text", { x: pad, y: height - 4, class: "axis" });
  left.textContent = Math.round((toMs - fromMs) / 60000) + " min ago";
  const right = svg("text", { x: width - pad, y: height - 4, class: "axis", "text-anchor": "end" });
  right.textContent = "now";
  root.append(left, right);
  for (const s of series) {
    if (!s.points.length) continue;
    const d = s.points.map(([t, p], i) => (i ? "L" : "M") + x(t).toFixed(1) + " " + y(p).toFixed(1)).join(" ");
    root.append(svg("path", { d, class: "line " + s.cls }));
    const [lt, lp] = s.points[s.points.length - 1];
    root.append(svg("circle", { cx: x(lt), cy: y(lp), r: 3, class: "dot " + s.cls }));
  }
  return root;
}
