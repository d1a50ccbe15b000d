// A line diff (longest common subsequence) of two texts, for comparing two versions of an
// app definition. Definitions are tens of lines, so the quadratic table is cheap; longer
// inputs are compared line by line position instead (bounded work).

const LCS_MAX_CELLS = 250000;

/** [{op: " "|"-"|"+", line}] turning `a` into `b`. */
export function diffLines(a, b) {
  const x = a.split("\n"), y = b.split("\n");
  if (x.length * y.length > LCS_MAX_CELLS) {
    const out = [];
    for (let i = 0; i < Math.max(x.length, y.length); i++) {
      if (x[i] === y[i]) out.push({ op: " ", line: x[i] });
      else {
        if (i < x.length) out.push({ op: "-", line: x[i] });
        if (i < y.length) out.push({ op: "+", line: y[i] });
      }
    }
    return out;
  }
  const n = x.length, m = y.length;
  const table = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      table[i][j] = x[i] === y[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push({ op: " ", line: x[i] }); i++; j++; }
    else if (table[i + 1][j] >= table[i][j + 1]) out.push({ op: "-", line: x[i++] });
    else out.push({ op: "+", line: y[j++] });
  }
  while (i < n) out.push({ op: "-", line: x[i++] });
  while (j < m) out.push({ op: "+", line: y[j++] });
  return out;
}
