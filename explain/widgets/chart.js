// The step chart: one panel of bars per stage of a step (the model's logits, each logits processor, the
// probabilities, a what-if), then three curves over all steps. The data comes from step_chart.py as plain numbers
// and strings; this module lays it out for the width it has (panels wrap into as many rows as they need), colours
// it from the page's theme (JupyterLab's CSS variables), and draws it with plotly.js. Text reaches plotly, which
// reads a little HTML, only through esc().
//
// Redraws are coalesced to one per animation frame and skipped while the chart is scrolled out of view; while a
// run streams new steps they are spaced so that drawing takes at most 5% of the time (a slow machine draws less
// often, never falls behind), and the newest step is drawn as soon as the stream pauses or ends; a click is drawn as
// its message arrives, a resize or a theme change at the next frame.

const LABEL = 124; // px left of each panel for the token labels
const GAP = 18; // px between a panel's bars and the next panel's labels
const MIN_BARS = 150; // px: narrower than this, the panels take fewer columns
const BAR = 24; // px per bar
const TITLE_LINE = 17; // px per line of a panel title
const AXIS = 26; // px under a panel for its tick numbers
const CURVE = 150; // px of a curve's plot
const FONT = 13; // px: tick labels and numbers, readable on a projector
const SPACING = 19; // while a run streams, the chart waits 19 times its last draw's cost: at most 5% of the time
const STALE_MS = 3000; // but never longer than this while it streams, whatever a draw cost on a loaded machine
const QUIET_MS = 250; // no new step for this long (and 3 times the stream's usual gap): it paused or ended, drawn now

export function esc(value) {
  return String(value).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&#34;").replace(/'/g, "&#39;");
}

// visible, isNumber, fixed, percent: prelude.js

function short(text, width) {
  const shown = visible(String(text));
  return shown.length > width ? shown.slice(0, width - 1) + "\u2026" : shown;
}

// -- the theme: JupyterLab's CSS variables (light or dark), with light fallbacks outside JupyterLab -------------
function rgb(el, color) {
  const probe = document.createElement("span");
  probe.style.color = color;
  probe.style.display = "none";
  el.appendChild(probe);
  const value = getComputedStyle(probe).color;
  probe.remove();
  const m = value.match(/[\d.]+/g) || [255, 255, 255];
  return m.slice(0, 3).map(Number);
}

export function theme(el) {
  const css = getComputedStyle(el);
  const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  const background = v("--jp-layout-color0", "#ffffff");
  const [r, g, b] = rgb(el, background);
  const dark = 0.2126 * r + 0.7152 * g + 0.0722 * b < 128;
  return {
    dark,
    text: v("--jp-ui-font-color1", dark ? "#e6edf3" : "#1f2328"),
    muted: v("--jp-ui-font-color2", dark ? "#9198a1" : "#59636e"),
    grid: dark ? "rgba(255,255,255,0.14)" : "rgba(0,0,0,0.10)",
    background,
    font: v("--jp-ui-font-family", "system-ui, sans-serif"),
    mono: v("--jp-code-font-family", "monospace"),
    chosen: dark ? "#f0883e" : "#d9480f",
    logit: dark ? "#5b8fc7" : "#8fb3de",
    prob: dark ? "#4493f8" : "#0969da",
    whatIf: dark ? "#3fb950" : "#2da44e",
    curves: dark ? ["#4493f8", "#a371f7", "#9198a1"] : ["#0969da", "#8250df", "#57606a"],
  };
}

// -- layout: columns from the width, rows from the number of panels, in pixels, then in plotly's paper units ----
function wrap(text, width) {
  const words = text.split(" ");
  const lines = [];
  let line = "";
  for (const w of words) {
    if (line && (line + " " + w).length > width) {
      lines.push(line);
      line = w;
    } else line = line ? line + " " + w : w;
  }
  if (line) lines.push(line);
  return lines;
}

export function geometry(width, panels) {
  const inner = Math.max(200, width - 8);
  const columns = Math.max(1, Math.min(panels.length || 1, Math.floor((inner + GAP) / (LABEL + MIN_BARS + GAP))));
  const bars = (inner - LABEL - (columns - 1) * (GAP + LABEL)) / columns; // px of bars per panel
  const chars = Math.max(12, Math.floor((bars + LABEL) / 7.4));
  const boxes = [];
  let top = 0;
  for (let start = 0; start < panels.length; start += columns) {
    const row = panels.slice(start, start + columns);
    const wrapped = row.map((p) => wrap(p.title, chars));
    const lines = Math.max(...wrapped.map((t) => t.length));
    const count = Math.max(...row.map((p) => p.bars.length + (p.extra ? 1.7 : 0)), 1);
    row.forEach((p, i) => {
      const left = LABEL + i * (bars + GAP + LABEL);
      boxes.push({ left, right: left + bars, titleTop: top, top: top + lines * TITLE_LINE + 4,
        bottom: top + lines * TITLE_LINE + 4 + count * BAR, title: wrapped[i] });
    });
    top += lines * TITLE_LINE + 4 + count * BAR + AXIS + 10;
  }
  const curveColumns = inner >= 640 ? 3 : 1;
  const curveWidth = (inner - 56 - (curveColumns - 1) * 56) / curveColumns;
  const curves = [];
  const curveStart = top + 8;
  for (let i = 0; i < 3; i++) {
    const row = Math.floor(i / curveColumns), column = i % curveColumns;
    const titleTop = curveStart + row * (CURVE + TITLE_LINE + 44);
    const left = 56 + column * (curveWidth + 56);
    curves.push({ left, right: left + curveWidth, titleTop, top: titleTop + TITLE_LINE + 4,
      bottom: titleTop + TITLE_LINE + 4 + CURVE });
  }
  const height = curves[2].bottom + 34;
  return { width: inner, height, columns, boxes, curves };
}

// -- the plotly figure ---------------------------------------------------------------------------------------
function axisName(n, letter) {
  return `${letter}axis${n > 1 ? n : ""}`;
}

function ref(n, letter) {
  return `${letter}${n > 1 ? n : ""}`;
}

const CURVES = [["p(chosen token)", "p", (v) => fixed(v, 3)], ["entropy (bits)", "entropy", (v) => fixed(v, 2)],
  ["step time (ms)", "ms", (v) => fixed(v, 0)]];

// Two figures, one above the other: the step's panels (redrawn for each step a reader clicks) and the curves over
// all steps (thousands of points, redrawn only when the run, the width, the theme or the panels' count changes).
// Plotly redraws a whole figure, every axis and trace, for any change of its data, so one figure redrew the curves
// on every click. The selected step's rings on the curves are an SVG of their own over the curves' figure, placed
// by the same fixed axis ranges plotly draws with: a click moves them without plotly. The curves keep their axis
// numbers (after the panels'), so both figures' subplots have distinct names.
// The panels' and curves' titles are HTML over each figure (titles()), not plotly annotations: plotly measures
// every annotation's text box in the page as it draws, a fifth of a click's redraw.
export function figure(step, curves, selected, width, colors) {
  const panels = (step && step.panels) || [];
  const geo = geometry(width, panels);
  return { bars: barsFigure(panels, geo, colors), curves: curvesFigure(curves, panels.length, geo, colors),
    rings: rings(curves, selected, geo), titles: titles(geo), geometry: geo };
}

function baseLayout(W, H, colors) {
  return {
    width: W, height: H, margin: { l: 0, r: 0, t: 0, b: 0 }, showlegend: false, dragmode: false,
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", bargap: 0.28,
    font: { family: colors.font, size: FONT, color: colors.muted },
    hoverlabel: { bgcolor: colors.background, bordercolor: colors.grid, font: { color: colors.text, size: 13 } },
  };
}

// Each figure's titles, in px of that figure: {lines, left, top}; the panels' over their token labels, the curves'
// over their axis numbers
export function titles(geo) {
  const start = split(geo);
  return { bars: geo.boxes.map((box) => ({ lines: box.title, left: box.left - LABEL + 4, top: box.titleTop })),
    curves: CURVES.map(([name], i) => ({ lines: [name], left: geo.curves[i].left - 40,
      top: geo.curves[i].titleTop - start })) };
}

// No axis's labels are measured against the page's edge: plotly's default for a number axis ("hide past div")
// measures every tick label's box in the page, which in JupyterLab is a style and layout pass over the whole
// notebook each time, about a third of a click's redraw; the layout gives the labels their room (the token labels
// LABEL px). Numbers are not tried at other angles either.
const TOKEN_AXIS = { ticklabeloverflow: "allow" }, NUMBER_AXIS = { tickangle: 0, ticklabeloverflow: "allow" };

export function split(geo) { // px: where the curves' figure starts
  return geo.curves[0].titleTop - 8;
}

function barsFigure(panels, geo, colors) {
  const W = geo.width, H = Math.max(split(geo), 1);
  const x = (px) => px / W, y = (px) => 1 - px / H;
  const data = [];
  const layout = baseLayout(W, H, colors);
  panels.forEach((panel, index) => {
    const n = index + 1, box = geo.boxes[index];
    const isProb = panel.kind !== "logit";
    const other = panel.kind === "what-if" ? colors.whatIf : isProb ? colors.prob : colors.logit;
    const rows = panel.bars.map(([word, id, value], i) => ({ word, id, value, y: i, chosen: id === panel.chosen }));
    if (panel.extra) rows.push({ word: panel.extra.word, id: panel.extra.id, value: panel.extra.value,
      y: panel.bars.length + 0.7, chosen: true, rank: panel.extra.rank });
    const shown = rows.filter((r) => isNumber(r.value));
    const values = shown.map((r) => r.value);
    let range, base;
    if (isProb) {
      base = 0;
      range = [0, Math.max(...values, 0.01) * 1.32];
    } else {
      const low = Math.min(...values, Infinity), high = Math.max(...values, -Infinity);
      const span = values.length ? (high - low) || Math.abs(high) || 1 : 1;
      base = values.length ? low - 0.4 * span : 0;
      range = [base, (values.length ? high : 1) + 0.32 * span];
    }
    const label = (r) => r.rank !== undefined ? `#${r.rank === null ? "?" : r.rank} ${short(r.word, 9)}` : short(r.word, 14);
    data.push({
      type: "bar", orientation: "h", xaxis: ref(n, "x"), yaxis: ref(n, "y"), tokenIds: shown.map((r) => r.id),
      y: shown.map((r) => r.y), x: shown.map((r) => r.value - base), base,
      marker: { color: shown.map((r) => (r.chosen ? colors.chosen : other)) },
      hovertemplate: "%{customdata}<extra></extra>",
      customdata: shown.map((r) => `${esc(short(r.word, 40))} (id ${esc(r.id)})<br>` +
        `${isProb ? "probability" : "score"} ${isProb ? fixed(r.value, 4) : fixed(r.value, 3)}` +
        (r.chosen ? `<br>the chosen token${r.rank !== undefined ? `, rank ${esc(r.rank ?? "?")}` : ""}` : "")),
    });
    // each bar's number just past its end: a text trace of its own, which plotly places from the numbers alone
    // (a bar's own outside text is measured in the page, one forced layout each, a fifth of a click's redraw)
    data.push({ type: "scatter", mode: "text", xaxis: ref(n, "x"), yaxis: ref(n, "y"), x: shown.map((r) => r.value),
      y: shown.map((r) => r.y), textposition: "middle right", cliponaxis: false, hoverinfo: "skip",
      text: shown.map((r) => "\u00a0" + (isProb ? (r.value === 0 ? "removed" : percent(r.value)) : fixed(r.value, 1))),
      textfont: { size: 12, color: colors.text } });
    const ticks = rows.map((r) => r.y), texts = rows.map((r) => (r.chosen ? `<b>${esc(label(r))}</b>` : esc(label(r))));
    if (panel.extra) { // the gap: a vertical ellipsis where the candidates between the top and the chosen one are
      ticks.push(panel.bars.length - 0.05);
      texts.push("\u22ee");
    }
    const last = rows.length ? rows[rows.length - 1].y : 0;
    layout[axisName(n, "x")] = { domain: [x(box.left), x(box.right)], anchor: ref(n, "y"), range, fixedrange: true,
      ...NUMBER_AXIS, zeroline: false, gridcolor: colors.grid, nticks: 4, tickformat: isProb ? ".0%" : "", ticks: "",
      tickfont: { size: 11, color: colors.muted }, showline: false };
    layout[axisName(n, "y")] = { domain: [y(box.bottom), y(box.top)], anchor: ref(n, "x"), range: [last + 0.6, -0.6],
      fixedrange: true, ...TOKEN_AXIS, tickmode: "array", tickvals: ticks, ticktext: texts, showgrid: false,
      zeroline: false, ticks: "", tickfont: { family: colors.mono, size: FONT, color: colors.text }, automargin: false };
  });
  return { data, layout };
}

// the curves' axis ranges, fixed (never autoranged): plotly's and the rings' alike
function curveRanges(c, key, box) {
  const count = (c.x || []).length;
  const present = (c[key] || []).filter(isNumber);
  const top = key === "p" ? 1.05 : Math.max(...present, 0) * 1.15 || 1;
  // room for the selected step's ring (15 px) at both ends, in steps; a one-step run's axis is that step alone
  const last = Math.max(count - 1, 0), pad = Math.max(0.6, (12 * Math.max(last, 1)) / Math.max(box.right - box.left, 1));
  return { x: [-pad, last + pad], y: [0, top], last };
}

function curvesFigure(curves, panelCount, geo, colors) {
  const W = geo.width, start = split(geo), H = geo.height - start;
  const x = (px) => px / W, y = (px) => 1 - (px - start) / H;
  const data = [];
  const layout = baseLayout(W, H, colors);
  const c = curves || { x: [] };
  const count = (c.x || []).length;
  CURVES.forEach(([name, key, format], i) => {
    const n = panelCount + 1 + i, box = geo.curves[i];
    const values = c[key] || [];
    const ranges = curveRanges(c, key, box);
    data.push({ type: "scatter", mode: count > 400 ? "lines" : "lines+markers", x: c.x || [], y: values, xaxis: ref(n, "x"),
      yaxis: ref(n, "y"), line: { color: colors.curves[i], width: 2 }, marker: { size: 5 }, connectgaps: false,
      hovertemplate: `step %{x}<br>${esc(name)}: %{customdata}<extra></extra>`, customdata: values.map(format) });
    layout[axisName(n, "x")] = { domain: [x(box.left), x(box.right)], anchor: ref(n, "y"), fixedrange: true,
      range: ranges.x, ...NUMBER_AXIS, zeroline: false, gridcolor: colors.grid, nticks: 6,
      ...(ranges.last < 12 ? { tickmode: "linear", tick0: 0, dtick: 1 } : {}), // whole steps only
      title: { text: "step", font: { size: 12, color: colors.muted }, standoff: 2 },
      tickfont: { size: 11, color: colors.muted } };
    layout[axisName(n, "y")] = { domain: [y(box.bottom), y(box.top)], anchor: ref(n, "x"), fixedrange: true,
      range: ranges.y, ...NUMBER_AXIS, zeroline: false, gridcolor: colors.grid, nticks: 4,
      tickfont: { size: 11, color: colors.muted } };
  });
  return { data, layout };
}

// The selected step's rings (15 px across, a 3 px line, as plotly's markers were): each curve's point at that step,
// in px of the curves' figure, from the same ranges and domains as its axes; none where a curve has no value there
export function rings(curves, selected, geo) {
  const c = curves || { x: [] };
  const count = (c.x || []).length, start = split(geo), s = selected;
  if (!(Number.isInteger(s) && s >= 0 && s < count)) return [];
  const out = [];
  CURVES.forEach(([, key], i) => {
    const box = geo.curves[i], value = (c[key] || [])[s];
    if (!isNumber(value)) return;
    const { x, y } = curveRanges(c, key, box);
    out.push({ x: box.left + ((c.x[s] - x[0]) / (x[1] - x[0])) * (box.right - box.left),
      y: box.bottom - start - ((value - y[0]) / (y[1] - y[0])) * (box.bottom - box.top), size: 15, width: 3 });
  });
  return out;
}

// Presentation mode: a figure laid out for width / scale, drawn `scale` times larger (its positions are fractions of
// the paper; its lengths, the fonts, markers and lines, are multiplied), so it fills the same width in larger type.
function scaled(fig, scale) {
  if (scale === 1) return fig;
  const grow = (node) => {
    if (Array.isArray(node)) { for (const item of node) if (item && typeof item === "object") grow(item); return; }
    for (const [key, value] of Object.entries(node)) {
      if (typeof value === "number" && (key === "size" || key === "width" || key === "standoff")) node[key] = value * scale;
      else if (value && typeof value === "object") grow(value);
    }
  };
  const { width, height } = fig.layout;
  grow(fig.data);
  grow(fig.layout);
  fig.layout.width = width * scale;
  fig.layout.height = height * scale;
  return fig;
}

// -- when new data is drawn ---------------------------------------------------------------------------------
// ms to wait before drawing (0 or less: draw now), from the last draw's time and cost (ms), the time the stream
// last brought a step and its usual gap between steps (draw(): SPACING, STALE_MS, QUIET_MS)
export function drawWait({ urgent, now, lastDraw, cost, lastData, gap }) {
  if (urgent) return 0;
  const spaced = lastDraw + SPACING * cost, stale = lastDraw + STALE_MS, quiet = lastData + Math.max(QUIET_MS, 3 * gap);
  return Math.min(spaced, stale, quiet) - now;
}

// the stream's usual gap between steps, smoothed; a gap of a second or more is a pause (the reader's), not the stream
export function nextGap(gap, elapsed) {
  return elapsed < 1000 ? 0.8 * gap + 0.2 * elapsed : gap;
}

// -- plotly.js: on the page already (an exported page inlines it), or the PlotlyLibrary widget's source ------------
function idle() { // after the views of this output have been set up: evaluating plotly.js holds the page a while
  return new Promise((resolve) => (globalThis.requestIdleCallback ? requestIdleCallback(resolve, { timeout: 400 })
    : setTimeout(resolve, 50)));
}

async function loadPlotly(model) {
  const ref = model.get("library"); // "IPY_MODEL_<id>"
  if (!ref || !model.widget_manager || !model.widget_manager.get_model) {
    throw new Error("plotly.js is not on this page and no PlotlyLibrary was given");
  }
  const library = await model.widget_manager.get_model(ref.replace(/^IPY_MODEL_/, ""));
  await idle();
  if (globalThis.Plotly && globalThis.Plotly.react) return globalThis.Plotly;
  const url = URL.createObjectURL(new Blob([library.get("source")], { type: "text/javascript" }));
  try {
    await new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = url;
      script.onload = resolve;
      script.onerror = () => reject(new Error("plotly.js did not load"));
      document.head.appendChild(script);
    });
  } finally {
    URL.revokeObjectURL(url);
  }
  return globalThis.Plotly;
}

function plotly(model) {
  if (globalThis.Plotly && globalThis.Plotly.react) return Promise.resolve(globalThis.Plotly);
  if (!globalThis.__explainPlotly) { // one load per page, whichever chart asks first
    globalThis.__explainPlotly = loadPlotly(model);
    globalThis.__explainPlotly.catch(() => { globalThis.__explainPlotly = null; });
  }
  return globalThis.__explainPlotly;
}

function render({ model, el }) {
  heal(model, el); // prelude.js
  const box = document.createElement("div");
  box.className = "explain-w explain-chart";
  const empty = document.createElement("div");
  empty.className = "explain-muted explain-chart-empty";
  const barsBox = document.createElement("div"); // the step's panels, and their titles
  barsBox.className = "explain-chart-bars-box";
  const plot = document.createElement("div");
  plot.className = "explain-chart-plot";
  const barTitles = document.createElement("div");
  barTitles.className = "explain-chart-titles";
  barsBox.append(plot, barTitles);
  const curvesBox = document.createElement("div"); // the curves over all steps, and the selected step's rings
  curvesBox.className = "explain-chart-curves-box";
  const curvesPlot = document.createElement("div");
  curvesPlot.className = "explain-chart-plot explain-chart-curves";
  const curveTitles = document.createElement("div");
  curveTitles.className = "explain-chart-titles";
  const ringLayer = document.createElementNS(SVG_NS, "svg");
  ringLayer.setAttribute("class", "explain-chart-rings");
  curvesBox.append(curvesPlot, curveTitles, ringLayer);
  const forkHint = document.createElement("div");
  forkHint.className = "explain-muted explain-chart-fork";
  forkHint.textContent = "Click another token's bar to force it at this step and continue (a new branch).";
  box.append(empty, barsBox, curvesBox, forkHint);
  el.appendChild(box);
  let clicks = 0;
  function onClick(event) { // a step-through: a click on another token's bar forks the run there
    const point = event && event.points && event.points[0];
    const step = model.get("step") || {};
    if (!model.get("forkable") || !point || !point.data || !point.data.tokenIds) return;
    const id = point.data.tokenIds[point.pointNumber];
    const panel = (step.panels || [])[0];
    if (!Number.isInteger(id) || (panel && id === panel.chosen) || !Number.isInteger(step.index)) return;
    clicks += 1;
    model.set("clicked", { step: step.index, token_id: id, n: clicks });
    model.save_changes();
    box.dataset.forked = `${step.index}:${id}`;
  }

  let Plotly = null, drawn = false, frame = 0, timer = 0, lastDraw = -Infinity, cost = 0, onScreen = true;
  let lastData = -Infinity, gap = 100; // when the stream last brought a step, and its usual gap (ms, smoothed)
  let dirty = true, closed = false, urgent = true;
  let seenWidth = 0; // the width last drawn or reported: the resize observer's first report of it draws nothing again
  let drawnBars = null, drawnCurves = null; // what each figure last drew: {source, key}; the same is not drawn again

  function placeRings(list, scale, colors) { // the selected step's rings over the curves (see rings())
    const circles = ringLayer.children;
    while (circles.length > list.length) circles[circles.length - 1].remove();
    while (circles.length < list.length) ringLayer.appendChild(document.createElementNS(SVG_NS, "circle"));
    list.forEach((ring, i) => {
      const circle = circles[i];
      circle.setAttribute("cx", String(ring.x * scale));
      circle.setAttribute("cy", String(ring.y * scale));
      circle.setAttribute("r", String((ring.size / 2) * scale));
      circle.setAttribute("stroke-width", String(ring.width * scale));
      circle.setAttribute("stroke", colors.chosen);
      circle.setAttribute("fill", "none");
    });
  }

  // a figure's titles (titles()), as HTML in the figure's px, scaled and coloured as the figure
  function placeTitles(layer, list, scale, colors) {
    layer.replaceChildren(...list.map(({ lines, left, top }) => {
      const title = document.createElement("div");
      title.className = "explain-chart-title";
      title.textContent = lines.join("\n");
      Object.assign(title.style, { left: `${left * scale}px`, top: `${top * scale}px`, color: colors.text,
        fontFamily: colors.font, fontSize: `${13 * scale}px`, lineHeight: `${TITLE_LINE * scale}px` });
      return title;
    }));
  }

  function draw() {
    frame = 0;
    streaming = false;
    if (closed || !dirty) return;
    const step = model.get("step") || { panels: [] };
    const message = model.get("message") || "";
    const hasPanels = step.panels && step.panels.length > 0;
    empty.textContent = hasPanels ? "" : message;
    empty.style.display = hasPanels ? "none" : "block";
    barsBox.style.display = hasPanels ? "block" : "none";
    curvesBox.style.display = hasPanels ? "block" : "none";
    forkHint.style.display = "none";
    if (!hasPanels) {
      if (drawn && Plotly) { Plotly.purge(plot); Plotly.purge(curvesPlot); delete plot.dataset.clicks; }
      barTitles.replaceChildren();
      curveTitles.replaceChildren();
      drawnBars = drawnCurves = null;
      drawn = false;
      dirty = false;
      box.dataset.drawn = "empty";
      return;
    }
    const width = box.clientWidth;
    if (!Plotly || !onScreen || width === 0) { // drawn once plotly.js is loaded and the chart is seen and sized
      dirty = true;
      box.dataset.waiting = !Plotly ? "plotly.js" : !onScreen ? "off screen" : "no width";
      // no width for a moment (JupyterLab re-laying out the page, a theme's style sheets swapped): the resize
      // observer may never hear of it, so look again shortly
      if (Plotly && onScreen && !timer) timer = setTimeout(() => { timer = 0; schedule(); }, 250);
      return;
    }
    // new data while a run streams: wait after each draw 19 times what it cost, so drawing takes at most 5% of
    // the page's time (the page shares the machine with the kernel); what a reader did (a click, a resize, a
    // theme) is drawn at once. The wait ends early when the stream goes quiet (a step-through's Run paused, the
    // call's end: the newest step is drawn within QUIET_MS, or 3 usual gaps), and at STALE_MS in any case. (The
    // wait was at most 1 s, which on a loaded machine, a draw costing 100 ms, made drawing 10% of the page's time.)
    const wait = drawWait({ urgent, now: performance.now(), lastDraw, cost, lastData, gap });
    if (wait > 0) {
      dirty = true;
      box.dataset.waiting = "spacing";
      if (!timer) timer = setTimeout(() => { timer = 0; schedule(); }, wait);
      return;
    }
    box.dataset.waiting = "";
    urgent = false;
    if (timer) { clearTimeout(timer); timer = 0; }
    const started = performance.now();
    const scale = scaleOf(box); // presentation mode: the figure of a narrower chart, every length scaled up
    const colors = theme(box), source = model.get("curves"), panels = step.panels;
    const geo = geometry(width / scale, panels);
    const start = split(geo), config = { displayModeBar: false, responsive: false, staticPlot: false };
    // each figure's div is given its height before plotly draws in it, so the chart is its full height at once
    plot.style.height = `${start * scale}px`;
    curvesBox.style.height = curvesPlot.style.height = `${(geo.height - start) * scale}px`;
    ringLayer.setAttribute("width", String(geo.width * scale));
    ringLayer.setAttribute("height", String((geo.height - start) * scale));
    // a figure is drawn again only when what it shows changed: the step (a click), or the curves (a new step), the
    // width, the theme, the scale or the panels' count (the curves' axes are numbered after the panels)
    const key = JSON.stringify([width, scale, colors, panels.length]);
    const named = titles(geo);
    if (!drawnBars || drawnBars.source !== step || drawnBars.key !== key) {
      const bars = scaled(barsFigure(panels, geo, colors), scale);
      Plotly.react(plot, bars.data, bars.layout, config);
      placeTitles(barTitles, named.bars, scale, colors);
      drawnBars = { source: step, key };
    }
    if (!drawnCurves || drawnCurves.source !== source || drawnCurves.key !== key) {
      const curves = scaled(curvesFigure(source, panels.length, geo, colors), scale);
      Plotly.react(curvesPlot, curves.data, curves.layout, config);
      placeTitles(curveTitles, named.curves, scale, colors);
      drawnCurves = { source, key };
    }
    placeRings(rings(source, model.get("selected"), geo), scale, colors);
    if (!plot.dataset.clicks && plot.on) { plot.on("plotly_click", onClick); plot.dataset.clicks = "1"; }
    plot.classList.toggle("forkable", !!model.get("forkable"));
    forkHint.style.display = model.get("forkable") ? "block" : "none";
    box.dataset.key = model.get("key") || "";
    drawn = true;
    dirty = false;
    seenWidth = width;
    lastDraw = performance.now();
    cost = lastDraw - started;
    box.dataset.drawn = String((box.dataset.draws | 0) + 1); // for tests and the benchmark: draws and their time
    box.dataset.draws = box.dataset.drawn;
    box.dataset.drawMs = String(Math.round((+box.dataset.drawMs || 0) + cost));
    box.dataset.columns = String(geo.columns);
    box.dataset.panels = String(step.panels.length);
    box.dataset.step = String(step.index);
  }

  function schedule() {
    if (!frame && !closed) frame = requestAnimationFrame(draw);
  }

  // What a reader picked (a step, another call) is drawn at the end of the task that brought its message (every
  // value of the message is in by then), not at the next frame: the page paints it in that frame. A message that
  // also brings new curves is a run streaming, drawn at most once a frame as before.
  // While a run streams, the dashboard follows its newest step, so `selected` changes with every step too: such a
  // message is new data, spaced (SPACING, STALE_MS), unless it also brings a new key (another call: drawn at once).
  let soon = false, streaming = false, newKey = false;
  function drawSoon() {
    if (soon || closed) return;
    soon = true;
    queueMicrotask(() => {
      soon = false;
      if (streaming) {
        if (!newKey) urgent = false;
        streaming = newKey = false;
        schedule();
        return;
      }
      newKey = false;
      if (frame) { cancelAnimationFrame(frame); frame = 0; }
      draw();
    });
  }

  const changed = () => { dirty = true; schedule(); }; // new data
  const asked = () => { urgent = true; changed(); }; // something the reader did (a resize, a theme): next frame
  const picked = () => { urgent = true; dirty = true; drawSoon(); }; // a message of what the reader picked
  // a new key (another call, branch or sequence) is what a reader picked: drawn at once, never spaced
  function streamed() { // new curves: a step of a run streaming
    const now = performance.now();
    gap = nextGap(gap, now - lastData);
    lastData = now;
    streaming = true;
    changed();
  }
  const handlers = { "change:step": changed, "change:curves": streamed,
    "change:selected": picked, "change:message": picked, "change:key": () => { newKey = true; picked(); },
    "change:forkable": picked };
  for (const [name, handler] of Object.entries(handlers)) model.on(name, handler);

  const resize = new ResizeObserver(() => {
    if (box.clientWidth !== seenWidth) { seenWidth = box.clientWidth; asked(); }
  });
  resize.observe(box);
  const seen = new IntersectionObserver((entries) => {
    onScreen = entries[entries.length - 1].isIntersecting;
    if (onScreen && dirty) asked();
  });
  seen.observe(box);
  // JupyterLab switches themes by changing these attributes on <body>; an exported page follows the system
  const themed = new MutationObserver(asked);
  themed.observe(document.body, { attributes: true,
    attributeFilter: ["data-jp-theme-light", "data-jp-theme-name", "data-explain-presentation"] });
  const media = globalThis.matchMedia ? globalThis.matchMedia("(prefers-color-scheme: dark)") : null;
  if (media && media.addEventListener) media.addEventListener("change", asked);

  plotly(model).then((library) => { Plotly = library; asked(); }, (error) => {
    empty.textContent = `The step chart could not load plotly.js: ${error.message}`;
    empty.style.display = "block";
  });
  draw();
  return () => {
    closed = true;
    for (const [name, handler] of Object.entries(handlers)) model.off(name, handler);
    resize.disconnect();
    seen.disconnect();
    themed.disconnect();
    if (media && media.removeEventListener) media.removeEventListener("change", asked);
    if (frame) cancelAnimationFrame(frame);
    if (timer) clearTimeout(timer);
    if (drawn && Plotly) { Plotly.purge(plot); Plotly.purge(curvesPlot); }
  };
}

export default { render };
