// Several sequences of one call as a prefix tree: a segment holds the tokens its sequences share; where they part,
// a branch point shows the distribution of that step and which token each sequence took. Draws `data`
// (explain.features.trees.sampling_tree). In a dashboard a click on a token opens that step of that sequence (it
// writes `clicked`). A removed token (a processor set its probability to exactly 0) says "removed". All text
// reaches the page through textContent.
// needs: tree.js

const label = (kind, n) => (kind === "branches" ? (n === 0 ? "original" : `branch ${n}`) : `#${n}`);

function badges(kind, names) {
  const box = el("span", "explain-st-badges");
  for (const n of names) {
    const badge = el("span", `explain-st-badge explain-st-c${n % 8}`, label(kind, n));
    badge.title = kind === "branches" ? label(kind, n) : `sequence ${n}`;
    box.appendChild(badge);
  }
  return box;
}

function splitView(split, kind) {
  const box = el("div", "explain-st-split");
  box.appendChild(el("div", "explain-st-split-head", `branch point at step ${split.step}: the distribution drawn from`));
  const takenBy = {};
  for (const [token, taken] of Object.entries(split.taken)) takenBy[token] = taken;
  const rows = split.ids.map((id, i) => ({ id, p: split.probs[i], text: split.texts[i],
    removed: !!(split.removed && split.removed[i]) }));
  for (const [token, taken] of Object.entries(split.taken)) {  // a forced or rare token outside the top
    if (!split.ids.includes(Number(token))) rows.push({ id: Number(token), p: taken.prob, text: taken.text, outside: true });
  }
  for (const row of rows) {
    const gone = row.removed || row.p === 0;
    const line = el("div", "explain-st-bar-row" + (takenBy[row.id] ? " taken" : "") + (gone ? " removed" : ""));
    line.appendChild(el("span", "explain-st-bar-tok", visible(row.text)));
    const bar = el("span", "explain-st-bar");
    const fill = el("span");
    fill.style.width = `${(100 * Math.max(0, Math.min(1, row.p || 0))).toFixed(1)}%`;
    bar.appendChild(fill);
    line.appendChild(bar);
    line.appendChild(el("span", "explain-st-bar-p", gone ? "removed" : pct(row.p)));
    const taken = takenBy[row.id];
    if (taken) {
      line.appendChild(badges(kind, taken.sequences));
      if (taken.forced) line.appendChild(el("span", "explain-st-forced", "forced"));
    }
    line.title = `${JSON.stringify(row.text)} (id ${row.id})${row.outside ? " \u00b7 outside the top shown" : ""}` +
      (gone ? " \u00b7 removed by a logits processor: probability exactly 0" : "");
    box.appendChild(line);
  }
  return box;
}

function segmentView(data, index, open) {
  const segment = data.segments[index];
  const node = el("div", "explain-st-node");
  const head = el("div", "explain-st-seg");
  head.appendChild(badges(data.kind, segment.sequences));
  const text = el("span", "explain-st-text");
  segment.tokens.forEach(([token, prob, forced], i) => {
    const span = treeToken("explain-st-tok" + (forced ? " forced" : ""), token, prob,
      `step ${segment.start + i} \u00b7 p = ${fixed(prob, 3)}` + (forced ? " \u00b7 forced" : ""));
    if (token.includes("\n")) span.classList.add("explain-st-nl");
    span.dataset.step = String(segment.start + i);
    span.dataset.sequences = segment.sequences.join(" ");
    if (open) {
      span.classList.add("clickable");
      span.addEventListener("click", () => open(segment.sequences, segment.start + i));
    }
    text.appendChild(span);
  });
  if (!segment.tokens.length) text.appendChild(el("span", "explain-muted", "(parts at once)"));
  head.appendChild(text);
  for (const [name, reason] of Object.entries(segment.ends)) {
    head.appendChild(el("span", "explain-st-end", `${label(data.kind, Number(name))} ${reason === "running" ? "\u2026" : "\u25a0 " + reason}`));
  }
  node.appendChild(head);
  if (segment.split) node.appendChild(splitView(segment.split, data.kind));
  if (segment.children.length) {
    const children = el("div", "explain-st-children");
    for (const child of segment.children) children.appendChild(segmentView(data, child, open));
    node.appendChild(children);
  }
  return node;
}

const shownOf = (kind, selected) => (kind === "branches" ? selected.branch : selected.sequence);

export default treePanel("explain-st", "Sampling tree", (box, data, click, selected) => {
  if (!data.segments || !data.segments.length) return;
  box.dataset.kind = data.kind;
  // a token several sequences share opens it in the one on screen when that is one of them, else in the first
  const open = click ? (names, step) => {
    const current = shownOf(data.kind, selected);
    const name = names.includes(current) ? current : names[0];
    click(data.kind === "branches" ? { branch: name, step } : { sequence: name, step });
  } : null;
  const tree = el("div", "explain-st-tree");
  const prompt = el("div", "explain-st-prompt");
  prompt.appendChild(el("span", "explain-muted", "prompt "));
  prompt.appendChild(el("span", "explain-st-prompt-text", data.prompt || ""));
  tree.appendChild(prompt);
  tree.appendChild(segmentView(data, 0, open));
  box.appendChild(tree);
  box.appendChild(el("div", "explain-legend", "Each token is shaded by the probability it was drawn with (red " +
    "unlikely, green confident). Badges name the sequences through a segment; at a branch point the bars are the " +
    "distribution of that step, and the badges show which token each sequence drew." +
    (click ? " Click a token to see its step in the text and the step view." : "")));
}, (box, selected) => { // the step on screen in the dashboard
  const current = String(shownOf(box.dataset.kind, selected));
  for (const span of box.querySelectorAll(".explain-st-tok.selected")) span.classList.remove("selected");
  for (const span of box.querySelectorAll(`.explain-st-tok[data-step="${selected.step}"]`)) {
    if (span.dataset.sequences.split(" ").includes(current)) span.classList.add("selected");
  }
});
