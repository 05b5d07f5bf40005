// The exported page (export.py), after prelude.js (el, the number formats): the dashboard's own ES modules, each
// drawing from a small in-page model that stands in for the kernel's widget model. The values were computed in
// Python by the same views as the live dashboard (views.VIEWS), for the newest step and for every step a reader may
// click; clicking a token here swaps in its step's values, as the dashboard does in the notebook. Each step's values
// are one line of JSON in the picker entry's own <script id="explain-steps-N">, parsed when that step is selected
// (stepValues), so a run of thousands of steps opens as fast as a short one.
//
// Text reaches the page through textContent; the HTML views' markup was escaped in Python (safe.esc / safe.fmt).

const data = JSON.parse(document.getElementById("explain-data").textContent);
const sources = JSON.parse(document.getElementById("explain-modules").textContent);

class Model { // the part of anywidget's model the modules use: get, set, on, off, save_changes
  constructor(values) {
    this.values = { ...values };
    this.handlers = new Map();
  }
  get(name) { return this.values[name]; }
  set(name, value) {
    if (JSON.stringify(this.values[name]) === JSON.stringify(value)) return;
    this.values[name] = value;
    for (const handler of this.handlers.get(`change:${name}`) || []) handler();
  }
  update(values) { // as a widget model takes a message: every value first, then each change's handlers
    const changed = Object.entries(values).filter(([name, value]) => JSON.stringify(this.values[name]) !== JSON.stringify(value));
    for (const [name, value] of changed) this.values[name] = value;
    for (const [name] of changed) for (const handler of this.handlers.get(`change:${name}`) || []) handler();
  }
  on(event, handler) {
    if (!this.handlers.has(event)) this.handlers.set(event, []);
    this.handlers.get(event).push(handler);
  }
  off(event, handler) {
    if (!event) { this.handlers.clear(); return; }
    this.handlers.set(event, (this.handlers.get(event) || []).filter((h) => h !== handler));
  }
  save_changes() {}
  send() {}
}

async function load(name) {
  const url = URL.createObjectURL(new Blob([sources[name]], { type: "text/javascript" }));
  try {
    return (await import(url)).default;
  } finally {
    URL.revokeObjectURL(url);
  }
}

const stepLines = new Map(); // picker entry -> its steps' lines, split on first use
function stepValues(key, index) { // {view: values that differ from the newest step's} of one step, or {}
  if (!(index >= 0)) return {};
  if (!stepLines.has(key)) {
    const node = document.getElementById(`explain-steps-${data.keys.findIndex((k) => k.key === key)}`);
    stepLines.set(key, node && node.textContent ? node.textContent.split("\n") : []);
  }
  const line = stepLines.get(key)[index];
  return line ? JSON.parse(line) : {};
}

// -- the theme: auto (the system's), light or dark, as JupyterLab marks it on <body> ----------------------------
const media = matchMedia("(prefers-color-scheme: dark)");
let themeChoice = "auto";
function applyTheme() {
  const dark = themeChoice === "dark" || (themeChoice === "auto" && media.matches);
  document.body.dataset.jpThemeLight = dark ? "false" : "true";
  document.body.dataset.jpThemeName = dark ? "JupyterLab Dark" : "JupyterLab Light";
}
media.addEventListener("change", applyTheme);
applyTheme();

async function main() {
  const root = document.getElementById("explain-root");
  const page = el("div", "explain-dashboard explain-export");
  const bar = el("div", "explain-w explain-export-bar");
  const picker = el("select", "explain-export-picker");
  picker.setAttribute("aria-label", "run and branch");
  for (const key of data.keys) {
    const option = el("option", "", key.label);
    option.value = key.key;
    picker.appendChild(option);
  }
  picker.style.display = data.keys.length > 1 ? "" : "none";
  const theme = el("button", "explain-export-theme", "theme: auto");
  theme.type = "button";
  theme.addEventListener("click", () => {
    themeChoice = { auto: "light", light: "dark", dark: "auto" }[themeChoice];
    theme.textContent = `theme: ${themeChoice}`;
    applyTheme();
  });
  bar.append(el("span", "explain-muted", data.note), picker, theme);
  page.appendChild(bar);

  const models = {}, hosts = {}, titles = {};
  let pageKey = data.keys[0].key;
  let pageData = data.pages[pageKey];
  for (const view of data.views) {
    if (view.section) {
      const title = el("div", "explain-w explain-caption explain-section", view.section[0]);
      title.appendChild(document.createTextNode(" "));
      title.appendChild(el("span", "explain-muted", view.section[1]));
      page.appendChild(title);
      titles[view.name] = title;
    }
    const host = el("div", `explain-view explain-view-${view.name}`);
    page.appendChild(host);
    hosts[view.name] = host;
    models[view.name] = new Model(pageData.values[view.name]);
  }
  root.replaceChildren(page);

  function drawHtml(name) { // an HTML view: markup escaped in Python, shown only when it has something to say
    const value = models[name].get("value") || "";
    hosts[name].innerHTML = value;
    hosts[name].style.display = value ? "" : "none";
  }

  function drawShown(name) { // a view (and its title) drawn as "shown": false takes no room, as in the notebook
    const display = models[name].get("shown") === false ? "none" : "";
    for (const node of [hosts[name], titles[name]]) if (node) node.style.display = display;
  }

  for (const view of data.views) {
    models[view.name].on("change:shown", () => drawShown(view.name));
    drawShown(view.name);
    if (view.module) {
      const module = await load(view.module);
      module.render({ model: models[view.name], el: hosts[view.name] });
    } else {
      drawHtml(view.name);
      models[view.name].on("change:value", () => drawHtml(view.name));
    }
  }

  function select() { // what the dashboard does in Python when a token is clicked: the views that read it redraw
    const index = models.text ? models.text.get("selected") : -1;
    const step = stepValues(pageKey, index);
    for (const name of pageData.step_views) models[name].update({ ...pageData.values[name], ...(step[name] || {}) });
    markTrees();
  }
  if (models.text) models.text.on("change:selected", select);

  function markTrees() { // the sequence, branch and step on screen (the dashboard's _mark_trees): the trees mark
    // it, and their tokens open their steps (tree.js: a tree with `selected` listens for clicks)
    const [, branch, sequence] = pageKey.split(":").map(Number);
    const step = models.text ? models.text.get("selected") : -1;
    const marked = { sequence: sequence || 0, branch: branch || 0, step: step >= 0 ? step : -1 };
    for (const name of ["sampling_tree", "beam_tree"]) if (models[name]) models[name].set("selected", marked);
  }
  markTrees();

  function turnTo(key) { // another page: every view takes its values, no step selected
    pageKey = key;
    pageData = data.pages[pageKey];
    for (const view of data.views) models[view.name].update(pageData.values[view.name]);
    if (models.text) models.text.set("selected", -1);
    select();
  }
  picker.addEventListener("change", () => turnTo(picker.value));

  // a token clicked in a tree ({sequence | branch, step}, tree.js): that step of that sequence or branch, as the
  // dashboard's _on_tree_click does in the notebook; its pages are "call:branch" and "call:0:sequence" (export.py)
  function opened(name) {
    const clicked = models[name].get("clicked") || {};
    if (!Number.isInteger(clicked.step) || "token_id" in clicked) return; // the chart's fork needs a kernel
    const run = pageKey.split(":")[0];
    const key = Number.isInteger(clicked.branch) ? `${run}:${clicked.branch}`
      : clicked.sequence > 0 ? `${run}:0:${clicked.sequence}` : `${run}:0`;
    if (!data.pages[key]) return;
    if (key !== pageKey) { picker.value = key; turnTo(key); }
    if (models.text) models.text.set("selected", clicked.step);
  }
  for (const view of data.views) models[view.name].on("change:clicked", () => opened(view.name));
  document.body.dataset.explainReady = "true";
}

main().catch((error) => {
  const message = el("pre", "explain-export-error", `This page could not draw its views: ${error}`);
  document.getElementById("explain-root").prepend(message);
  throw error;
});
