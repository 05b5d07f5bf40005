// Inside the model at one step: the logit lens, attention weights (heatmap and head view) and attribution.
// Draws `look` (a generation/inspect event's data); writes only `tab`, `layer`, `head` and `request`.
// All text reaches the page through textContent.

const blue = (a) => `rgba(9, 105, 218, ${Math.max(0, Math.min(1, a)).toFixed(3)})`;

const LAYER_PX = 56, CHOSEN_PX = 150, READING_PX = 84; // the lens grid's columns (a reading at least 84 px)

function lensView(look, texts, width) {
  const lens = look.lens;
  const box = el("div", "explain-in-lens");
  const grid = el("div", "explain-in-lens-grid");
  // the layer, then p(chosen) (what the lesson asks about, so never off-screen), then as many of the top readings
  // as the width holds (an 800 px notebook shows fewer of them, not a grid wider than its output)
  const all = lens.layers[0].ids.length;
  const scale = parseFloat(getComputedStyle(document.body).getPropertyValue("--explain-scale")) || 1; // presentation
  const [layerPx, chosenPx, readingPx] = [LAYER_PX, CHOSEN_PX, READING_PX].map((px) => Math.round(px * scale));
  const fits = width > 0 ? Math.floor((width - layerPx - chosenPx - 4) / (readingPx + 1)) : all;
  const readings = Math.max(1, Math.min(all, fits));
  grid.dataset.readings = String(readings);
  grid.style.gridTemplateColumns = `${layerPx}px ${chosenPx}px repeat(${readings}, minmax(0, 1fr))`;
  grid.appendChild(el("div", "explain-in-head", "layer"));
  grid.appendChild(el("div", "explain-in-head explain-in-chosen-head", `p(${visible(look.token)})`));
  for (let i = 0; i < readings; i++) {
    grid.appendChild(el("div", "explain-in-head", i === 0 ? `top reading${readings < all ? ` (${readings} of ${all})` : ""}` : ""));
  }
  for (const row of lens.layers) {
    const name = row.layer === 0 ? "embed" : String(row.layer);
    grid.appendChild(el("div", "explain-in-layer", name));
    const bar = el("div", "explain-in-bar");
    const fill = el("span");
    fill.style.width = `${(100 * row.chosen_prob).toFixed(1)}%`;
    bar.appendChild(fill);
    bar.appendChild(el("em", "", `${pct(row.chosen_prob)} \u00b7 rank ${row.chosen_rank}`));
    bar.title = `layer ${name}: the chosen token has p = ${row.chosen_prob.toPrecision(3)}, rank ${row.chosen_rank}`;
    grid.appendChild(bar);
    row.ids.slice(0, readings).forEach((id, i) => {
      const p = row.probs[i];
      const cell = el("div", "explain-in-cell" + (id === look.token_id ? " chosen" : ""));
      cell.style.background = blue(Math.sqrt(p) * 0.85);
      cell.appendChild(el("span", "explain-in-tok", visible(texts[id] ?? `#${id}`)));
      cell.appendChild(el("span", "explain-in-num", pct(p)));
      cell.title = `layer ${name} \u00b7 ${JSON.stringify(texts[id] ?? "")} (id ${id}) \u00b7 p = ${p.toPrecision(3)}`;
      if (Math.sqrt(p) * 0.85 > 0.5) cell.classList.add("dark");
      grid.appendChild(cell);
    });
  }
  box.appendChild(grid);
  const exact = lens.last_layer_difference === 0 ? "equals the step's logits exactly"
    : `differs from the step's logits by ${lens.last_layer_difference.toExponential(1)}`;
  box.appendChild(el("div", "explain-muted", `The last layer's reading ${exact}. Orange: the token the step picked.`));
  return box;
}

function attentionView(look, model) {
  const att = look.attention;
  const box = el("div", "explain-in-att");
  const head = model.get("head") ?? -1; // (an exported page starts without the widget's own traits)
  const layer = Math.min(model.get("layer") ?? 0, att.layers - 1);
  const rows = head < 0 ? att.mean : att.heads.map((l) => l[Math.min(head, att.num_heads - 1)]);
  const controls = el("div", "explain-in-controls");
  const pick = el("select");
  pick.appendChild(new Option("heads averaged", "-1"));
  for (let h = 0; h < att.num_heads; h++) pick.appendChild(new Option(`head ${h}`, String(h)));
  pick.value = String(head);
  pick.addEventListener("change", () => { model.set("head", Number(pick.value)); model.save_changes(); });
  controls.appendChild(el("span", "explain-muted", "show"));
  controls.appendChild(pick);
  controls.appendChild(el("span", "explain-muted", "\u00b7 click a row for its head view"));
  box.appendChild(controls);
  const tokens = look.context_tokens;
  const heat = el("div", "explain-in-heat");
  heat.style.gridTemplateColumns = `56px repeat(${tokens.length}, minmax(14px, 1fr))`;
  heat.appendChild(el("div", "explain-in-head", "layer"));
  tokens.forEach((t, i) => {
    const label = el("div", "explain-in-col", visible(t));
    label.title = `position ${i}: ${JSON.stringify(t)}`;
    heat.appendChild(label);
  });
  rows.forEach((weights, l) => {
    const name = el("div", "explain-in-layer" + (l === layer ? " selected" : ""), String(l + 1));
    heat.appendChild(name);
    const top = Math.max(...weights) || 1;
    weights.forEach((w, i) => {
      const cell = el("div", "explain-in-hcell" + (l === layer ? " selected" : ""));
      cell.style.background = blue(w / top);
      cell.title = `layer ${l + 1}, position ${i} ${JSON.stringify(tokens[i])}: weight ${Number(w).toFixed(4)}`;
      cell.addEventListener("click", () => { model.set("layer", l); model.save_changes(); });
      heat.appendChild(cell);
    });
    name.addEventListener("click", () => { model.set("layer", l); model.save_changes(); });
  });
  box.appendChild(heat);
  // head view (BertViz's): lines from the new token to every context token, opacity = weight
  const weights = rows[layer];
  const lineHeight = 15, height = Math.max(tokens.length * lineHeight, 40);
  const view = el("div", "explain-in-headview");
  view.appendChild(el("div", "explain-caption", `Layer ${layer + 1}, ${head < 0 ? "heads averaged" : `head ${head}`}: ` +
    `what ${JSON.stringify(look.token)} at position ${look.position} read`));
  const wrap = el("div", "explain-in-lines");
  const left = el("div", "explain-in-ltoks");
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("width", "160");
  svg.setAttribute("height", String(height));
  const top = Math.max(...weights) || 1;
  tokens.forEach((t, i) => {
    const row = el("div", "explain-in-ltok", visible(t));
    row.style.height = `${lineHeight}px`;
    row.style.background = blue(0.6 * weights[i] / top);
    row.title = `weight ${Number(weights[i]).toFixed(4)}`;
    left.appendChild(row);
    const line = document.createElementNS(svgNS, "line");
    line.setAttribute("x1", "0");
    line.setAttribute("y1", String(i * lineHeight + lineHeight / 2));
    line.setAttribute("x2", "150");
    line.setAttribute("y2", String(height / 2));
    line.setAttribute("stroke", "#0969da");
    line.setAttribute("stroke-width", String(1 + 5 * weights[i] / top));
    line.setAttribute("stroke-opacity", String(Math.max(0.04, weights[i] / top).toFixed(3)));
    svg.appendChild(line);
  });
  const right = el("div", "explain-in-rtok", visible(look.token));
  right.style.marginTop = `${height / 2 - 10}px`;
  wrap.appendChild(left);
  wrap.appendChild(svg);
  wrap.appendChild(right);
  view.appendChild(wrap);
  box.appendChild(view);
  const first = att.first_token_share;
  box.appendChild(el("div", "explain-muted", att.sink
    ? `On average ${pct(first)} of the weight goes to the first token, ${(first / att.uniform_share).toFixed(0)}x an even share: ` +
      "an attention sink (Xiao et al. 2023). Heads with nothing useful to read park their weight there; the softmax must put it somewhere."
    : `The first token takes ${pct(first)} on average (an even share would be ${pct(att.uniform_share)}).`));
  return box;
}

function attributionView(look, model) {
  const box = el("div", "explain-in-attr");
  const attr = look.attribution;
  const buttons = el("div", "explain-in-controls");
  for (const [method, label] of [["gradient_x_input", "gradient \u00d7 input (fast)"],
                                 ["integrated_gradients", "integrated gradients (slower)"]]) {
    const button = el("button", "explain-in-button", attr && attr.method === method ? `\u2713 ${label}` : `compute: ${label}`);
    button.addEventListener("click", () => { model.set("request", `attribution:${method}:${Date.now()}`); model.save_changes(); });
    buttons.appendChild(button);
  }
  box.appendChild(buttons);
  if (!attr) {
    box.appendChild(el("div", "explain-muted", "Not computed yet: it runs the model forward and backward over the context (Captum)."));
    return box;
  }
  const tokens = look.context_tokens;
  const top = Math.max(...attr.scores.map(Math.abs)) || 1;
  const text = el("div", "explain-in-attr-text");
  attr.scores.forEach((s, i) => {
    const span = el("span", "explain-in-attr-tok", tokens[i]);
    const a = (0.85 * Math.abs(s) / top).toFixed(3);
    span.style.background = s >= 0 ? `rgba(45, 164, 78, ${a})` : `rgba(207, 34, 46, ${a})`;
    span.title = `position ${i} ${JSON.stringify(tokens[i])}: ${s.toPrecision(3)} (${pct(attr.shares[i])} of the total)`;
    text.appendChild(span);
  });
  text.appendChild(el("span", "explain-in-attr-target", visible(look.token)));
  box.appendChild(text);
  const order = attr.scores.map((s, i) => i).sort((a, b) => attr.shares[b] - attr.shares[a]).slice(0, 8);
  const list = el("div", "explain-in-attr-list");
  for (const i of order) {
    const row = el("div", "explain-in-attr-row");
    row.appendChild(el("code", "", visible(tokens[i])));
    const bar = el("span", "explain-in-attr-bar");
    bar.style.width = `${(100 * attr.shares[i]).toFixed(1)}%`;
    bar.style.background = attr.scores[i] >= 0 ? "#2da44e" : "#cf222e";
    row.appendChild(bar);
    row.appendChild(el("span", "explain-in-num", `${pct(attr.shares[i])} ${attr.scores[i] >= 0 ? "for" : "against"}`));
    list.appendChild(row);
  }
  box.appendChild(list);
  const gap = attr.completeness_gap === null ? "" :
    ` The scores add up to the change in log-probability from the baseline within ${Math.abs(attr.completeness_gap).toPrecision(2)} (${attr.steps} steps).`;
  box.appendChild(el("div", "explain-muted", `${attr.captum} over ${tokens.length} tokens in ${attr.seconds.toFixed(1)} s. ` +
    "Green pushed the chosen token up, red pushed it down." + gap));
  return box;
}

function render({ model, el: root }) {
  heal(model, root); // prelude.js
  const box = el("div", "explain-w explain-inside");
  root.appendChild(box);
  function draw() {
    const look = model.get("look") || {};
    const texts = look.token_texts || {};
    box.replaceChildren();
    const status = model.get("status");
    if (!look.token && look.token !== "") {
      box.appendChild(el("div", "explain-muted", status || "Pick a step to look inside the model."));
      return;
    }
    const header = el("div", "explain-caption",
      `Inside the model at step ${look.step}: how ${JSON.stringify(look.token)} came out (position ${look.position})`);
    box.appendChild(header);
    const tabs = el("div", "explain-in-tabs");
    const tab = model.get("tab") || "lens";
    for (const [key, label] of [["lens", "Logit lens"], ["attention", "Attention"], ["attribution", "Attribution"]]) {
      const button = el("button", "explain-in-tab" + (key === tab ? " active" : ""), label);
      button.dataset.tab = key;
      button.addEventListener("click", () => { model.set("tab", key); model.save_changes(); });
      tabs.appendChild(button);
    }
    box.appendChild(tabs);
    const part = look[tab];
    if (part && part.note) box.appendChild(el("div", "explain-in-note", part.note));
    if (tab === "lens" && look.lens) box.appendChild(lensView(look, texts, box.clientWidth));
    else if (tab === "attention" && look.attention) box.appendChild(attentionView(look, model));
    else if (tab === "attribution") box.appendChild(attributionView(look, model));
    else box.appendChild(el("div", "explain-muted", `This trace has no ${tab} for step ${look.step}.`));
    if (status) box.appendChild(el("div", "explain-muted explain-in-status", status));
  }
  draw();
  const names = ["change:look", "change:tab", "change:layer", "change:head", "change:status"];
  for (const name of names) model.on(name, draw);
  let width = box.clientWidth; // the lens grid's columns follow the output's width
  const resize = typeof ResizeObserver === "function" ? new ResizeObserver(() => {
    if (box.clientWidth !== width) { width = box.clientWidth; draw(); }
  }) : null;
  if (resize) resize.observe(box);
  return () => { for (const name of names) model.off(name, draw); if (resize) resize.disconnect(); };
}

export default { render };
