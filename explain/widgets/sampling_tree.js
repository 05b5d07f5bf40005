// Several sequences of one call as a prefix tree: a segment holds the tokens its sequences share; where they part,
// a branch point shows the distribution of that step and which token each sequence took. Draws `data`
// (explain.features.trees.sampling_tree); writes nothing back. All text reaches the page through textContent.

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function visible(text) {
  if (!text) return "\u2205";
  return text.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
}

const shade = (p) => (p === null || p === undefined ? "rgba(128,128,128,0.25)"
  : `hsla(${Math.round(120 * Math.max(0, Math.min(1, p)))}, 75%, 45%, 0.28)`);
const pct = (p) => (p === 0 ? "removed" : p >= 0.995 ? "100%" : p >= 0.01 ? `${(100 * p).toFixed(0)}%` : p >= 0.001 ? `${(100 * p).toFixed(1)}%` : "<0.1%");
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
    const line = el("div", "explain-st-bar-row" + (takenBy[row.id] ? " taken" : "") + (row.removed || row.p === 0 ? " removed" : ""));
    line.appendChild(el("span", "explain-st-bar-tok", visible(row.text)));
    const bar = el("span", "explain-st-bar");
    const fill = el("span");
    fill.style.width = `${(100 * Math.max(0, Math.min(1, row.p || 0))).toFixed(1)}%`;
    bar.appendChild(fill);
    line.appendChild(bar);
    line.appendChild(el("span", "explain-st-bar-p", row.p === null || row.p === undefined ? "?" : pct(row.p)));
    const taken = takenBy[row.id];
    if (taken) {
      line.appendChild(badges(kind, taken.sequences));
      if (taken.forced) line.appendChild(el("span", "explain-st-forced", "forced"));
    }
    line.title = `${JSON.stringify(row.text)} (id ${row.id})${row.outside ? " \u00b7 outside the top shown" : ""}` +
      (row.removed || row.p === 0 ? " \u00b7 removed by a logits processor: probability exactly 0" : "");
    box.appendChild(line);
  }
  return box;
}

let clickTree = null; // set by render: (sequence or branch, step) -> the dashboard shows that step

function segmentView(data, index) {
  const segment = data.segments[index];
  const node = el("div", "explain-st-node");
  const head = el("div", "explain-st-seg");
  head.appendChild(badges(data.kind, segment.sequences));
  const text = el("span", "explain-st-text");
  segment.tokens.forEach(([token, prob, forced], i) => {
    const span = el("span", "explain-st-tok" + (forced ? " forced" : ""), token);
    if (token.includes("\n")) span.classList.add("explain-st-nl");
    span.style.background = shade(prob);
    span.title = `step ${segment.start + i} \u00b7 p = ${prob === null || prob === undefined ? "?" : Number(prob).toFixed(3)}` +
      (forced ? " \u00b7 forced" : "");
    span.dataset.step = String(segment.start + i);
    span.dataset.sequences = segment.sequences.join(" ");
    if (clickTree) {
      const handler = clickTree; // this view's own (the module's variable is shared by every tree on the page)
      span.classList.add("clickable");
      span.addEventListener("click", () => handler(segment.sequences, segment.start + i));
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
    for (const child of segment.children) children.appendChild(segmentView(data, child));
    node.appendChild(children);
  }
  return node;
}

function render({ model, el: root }) {
  const box = el("div", "explain-w explain-st");
  root.appendChild(box);
  let clicks = 0, kind = "samples";
  const click = (names, step) => { // a token shared by several sequences opens it in the one on screen, if there
    const selected = model.get("selected") || {};
    const current = kind === "branches" ? selected.branch : selected.sequence;
    const name = names.includes(current) ? current : names[0];
    clicks += 1;
    model.set("clicked", kind === "branches" ? { branch: name, step, n: clicks } : { sequence: name, step, n: clicks });
    model.save_changes();
  };
  function mark() { // the step on screen in the dashboard
    const selected = model.get("selected") || {};
    const current = kind === "branches" ? selected.branch : selected.sequence;
    for (const span of box.querySelectorAll(".explain-st-tok.selected")) span.classList.remove("selected");
    for (const span of box.querySelectorAll(`.explain-st-tok[data-step="${selected.step}"]`)) {
      if (span.dataset.sequences.split(" ").includes(String(current))) span.classList.add("selected");
    }
  }
  function draw() {
    const data = model.get("data") || {};
    kind = data.kind;
    clickTree = Object.keys(model.get("selected") || {}).length ? click : null; // only where a dashboard listens
    box.replaceChildren();
    box.appendChild(el("div", "explain-caption", "Sampling tree"));
    box.appendChild(el("div", "explain-muted", model.get("caption") || ""));
    if (!data.segments || !data.segments.length) return;
    const tree = el("div", "explain-st-tree");
    const prompt = el("div", "explain-st-prompt");
    prompt.appendChild(el("span", "explain-muted", "prompt "));
    prompt.appendChild(el("span", "explain-st-prompt-text", data.prompt || ""));
    tree.appendChild(prompt);
    tree.appendChild(segmentView(data, 0));
    box.appendChild(tree);
    box.appendChild(el("div", "explain-legend", "Each token is shaded by the probability it was drawn with (red " +
      "unlikely, green confident). Badges name the sequences through a segment; at a branch point the bars are the " +
      "distribution of that step, and the badges show which token each sequence drew."));
  }
  const redraw = () => { draw(); mark(); };
  redraw();
  model.on("change:data", redraw);
  model.on("change:caption", redraw);
  model.on("change:selected", mark);
  return () => { model.off("change:data", redraw); model.off("change:caption", redraw); model.off("change:selected", mark); };
}

export default { render };
