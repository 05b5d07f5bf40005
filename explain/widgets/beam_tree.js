// Beam search, step by step: one column per step, each running beam linked to the beam it extends, the
// candidates that finished (score divided by length ** length_penalty) or were pruned, and the final ranking, with
// the returned sequences' paths drawn thick. Draws `data` (explain.features.trees.beam_tree); in a dashboard a click
// on a node of a returned beam's path opens that step of that beam (it writes `clicked`).
// All text reaches the page through textContent (SVG text included).
// needs: tree.js

const COLUMN = 126, WIDTH = 108, HEIGHT = 34, GAP = 8, PAD = 6;

const short = (text, n) => (text.length > n ? text.slice(0, n - 1) + "\u2026" : text);
const num = (x) => fixed(x, 2);

function layout(levels) {
  const placed = levels.map((nodes, level) => nodes.map((node, row) => ({
    ...node, level, x: PAD + level * COLUMN, y: PAD + row * (HEIGHT + GAP),
  })));
  const rows = Math.max(...levels.map((nodes) => nodes.length), 1);
  return { placed, width: PAD * 2 + (levels.length - 1) * COLUMN + WIDTH, height: PAD * 2 + rows * (HEIGHT + GAP) };
}

function treeView(data, click) {
  const { placed, width, height } = layout(data.levels);
  // drawn in its own units and scaled by the page's --explain-scale (presentation mode), text and boxes alike
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "explain-bt-svg", role: "img" });
  root.style.width = `calc(${width}px * var(--explain-scale, 1))`;
  root.style.height = `calc(${height}px * var(--explain-scale, 1))`;
  root.appendChild(svg("title", {}, "beam search tree"));
  const edges = svg("g"), nodes = svg("g");
  root.append(edges, nodes);
  placed.forEach((level, index) => {
    for (const node of level) {
      if (index > 0) {
        const parents = placed[index - 1];
        const parent = index === 1 ? parents[0] : parents.find((p) => p.kind === "running" && p.slot === node.parent);
        if (parent) {
          edges.appendChild(treeEdge(parent.x + WIDTH, parent.y + HEIGHT / 2, node.x, node.y + HEIGHT / 2,
            `explain-bt-edge ${node.kind}${node.returned ? " best" : ""}`));
        }
      }
      const group = svg("g", { class: `explain-bt-node ${node.kind}${node.returned ? " best" : ""}`,
        transform: `translate(${node.x},${node.y})` });
      group.appendChild(svg("rect", { width: WIDTH, height: HEIGHT, rx: 5 }));
      const first = node.kind === "root" ? short(node.text.replace(/\s+/g, " ").trim(), 16) : short(visible(node.text), 13);
      group.appendChild(svg("text", { x: 6, y: 14, class: "explain-bt-tok" }, first));
      let second = "";
      if (node.kind === "root") second = "prompt";
      else if (node.kind === "running") second = `slot ${node.slot} \u00b7 \u03a3 ${num(node.score)}`;
      else if (node.kind === "finished") second = `\u2713 ${num(node.normalized)}${node.ranks ? ` \u00b7 #${node.ranks.join(",")}` : ""}`;
      else if (node.kind === "ended") second = `ended ${num(node.normalized)}`;
      else second = `pruned \u03a3 ${num(node.score)}`;
      group.appendChild(svg("text", { x: 6, y: 28, class: "explain-bt-score" }, second));
      const tip = node.kind === "root" ? node.text
        : `${JSON.stringify(node.text)} (id ${node.token_id}) \u00b7 ${node.kind}` +
          ` \u00b7 summed log-probability ${num(node.score)}` +
          (node.normalized !== undefined ? ` \u00b7 length-penalised score ${Number(node.normalized).toFixed(4)}` : "") +
          (node.reason ? ` \u00b7 met ${node.reason}` : "") + (node.parent !== null && node.parent !== undefined ? ` \u00b7 extends slot ${node.parent}` : "");
      group.appendChild(svg("title", {}, tip));
      const returnedRank = (node.ranks || []).find((r) => data.ranking && r < data.ranking.num_return_sequences);
      if (returnedRank !== undefined && node.level > 0 && click) { // on a returned beam's path: opens that step
        group.classList.add("clickable");
        group.dataset.sequence = String(returnedRank);
        group.dataset.step = String(node.level - 1);
        group.addEventListener("click", () => click({ sequence: returnedRank, step: node.level - 1 }));
      }
      nodes.appendChild(group);
    }
  });
  return root;
}

function rankingView(ranking) {
  const table = el("table", "explain-bt-rank");
  const head = el("tr");
  for (const name of ["rank", "returned", "text", "log p", "length", "score"]) head.appendChild(el("th", "", name));
  table.appendChild(head);
  for (const h of ranking.hypotheses) {
    const row = el("tr", h.returned ? "returned" : "");
    row.appendChild(el("td", "", String(h.rank)));
    row.appendChild(el("td", "", h.returned ? "\u2713" : ""));
    row.appendChild(el("td", "explain-bt-text", h.text));
    row.appendChild(el("td", "", Number(h.log_prob).toFixed(3)));
    row.appendChild(el("td", "", String(h.length)));
    row.appendChild(el("td", "", Number(h.score).toFixed(4)));
    table.appendChild(row);
  }
  return table;
}

export default treePanel("explain-bt", "Beam tree", (box, data, click) => {
  if (!data.levels || data.levels.length < 2) return;
  if (data.label) box.appendChild(el("div", "explain-muted", data.label));
  const scroll = el("div", "explain-bt-scroll");
  scroll.appendChild(treeView(data, click));
  box.appendChild(scroll);
  box.appendChild(treeLegend([["running", "running beam (\u03a3 = summed log-probability)"],
    ["finished", "finished: \u03a3 / length^length_penalty"], ["pruned", "candidate not kept"],
    ["best", "a returned sequence's path"]].map(([kind, words]) => [el("span", `explain-bt-swatch ${kind}`), words]),
  "explain-bt-key"));
  if (data.ranking) {
    box.appendChild(el("div", "explain-caption", "Final ranking"));
    box.appendChild(el("div", "explain-muted", `${data.ranking.reason}; score = log p / length ^ ` +
      `${data.ranking.length_penalty} (length_penalty); the first ${data.ranking.num_return_sequences} are returned`));
    box.appendChild(rankingView(data.ranking));
  }
}, (box, selected) => { // the step on screen in the dashboard
  for (const node of box.querySelectorAll(".explain-bt-node.selected")) node.classList.remove("selected");
  const node = box.querySelector(`.explain-bt-node[data-sequence="${selected.sequence}"][data-step="${selected.step}"]`);
  if (node) node.classList.add("selected");
});
