// The prelude of every view's ES module (base.module_source puts it in front of the module; the exported page's
// export.js too): the helpers the views share, so each module draws and formats the same way. Top-level names
// here are the modules' own: a module must not declare el, svg, visible, isNumber, fixed, percent, pct, probColor,
// heal, hold, holdHeight, inPage, offline, markOffline or HOLD_MS again (a module that does is a SyntaxError in the
// page).

// -- building the page: text always through textContent, never innerHTML (a trace is a file people share) --------
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// a token's text with its whitespace made visible (the same marks as widgets/state.py's visible)
function visible(text) {
  if (!text) return "\u2205";
  return text.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
}

// -- numbers: "?" where the trace has none ---------------------------------------------------------------------
function isNumber(v) {
  return typeof v === "number" && Number.isFinite(v);
}

function fixed(v, digits) {
  return isNumber(v) ? v.toFixed(digits) : "?";
}

// a probability as a percentage with the digits it needs: 42%, 4.2%, 0.04%
function percent(v) {
  if (!isNumber(v)) return "?";
  return v >= 0.1 ? `${(100 * v).toFixed(0)}%` : v >= 0.001 ? `${(100 * v).toFixed(1)}%` : `${(100 * v).toPrecision(1)}%`;
}

// a probability as a short percentage for a cell or a bar: 100%, 42%, 4.2%, <0.1%
function pct(p) {
  if (!isNumber(p)) return "?";
  return p >= 0.995 ? "100%" : p >= 0.01 ? `${(100 * p).toFixed(0)}%` : p >= 0.001 ? `${(100 * p).toFixed(1)}%` : "<0.1%";
}

// the probability a token was picked with as a background: red (unlikely) to green (confident), translucent so the
// text stays readable in light and dark themes (widgets/static.py's prob_color)
function probColor(p) {
  if (!isNumber(p)) return "rgba(128,128,128,0.25)";
  return `hsla(${Math.round(120 * Math.max(0, Math.min(1, p)))}, 75%, 45%, 0.28)`;
}

// -- heal ------------------------------------------------------------------------------------------------------
// anywidget gives a widget model 2 s to load
// its module; when the page is busy longer than that (plotly.js evaluating, a chart drawing on a loaded machine)
// it gives up on the model with "[anywidget] Failed to initialize model." and from then on drops every message
// the kernel sends to it, so the view stays as first drawn: a blank chart, an empty text, for good. heal() takes
// the model's messages again (ipywidgets' own handler) and asks the kernel for the whole state once, so a view
// always catches up. It needs the model's id (the `ref` trait) and the page's widget manager; elsewhere (an
// exported page, another manager) it does nothing. Given the view's root, it also marks a view drawn from saved
// state (offline).
async function heal(model, root) {
  present(model);
  hold(root);
  try {
    const manager = model.widget_manager, ref = model.get("ref");
    if (!ref || !manager || typeof manager.get_model !== "function") return;
    const real = await manager.get_model(ref);
    if (!real) return;
    if (!real.comm && real.comm_live === false) { offline(root); return; } // drawn from a notebook's saved state
    if (real.__explainHealed || !real.comm || typeof real.comm.on_msg !== "function") return;
    const base = Object.getPrototypeOf(Object.getPrototypeOf(real)); // past anywidget's model, to ipywidgets'
    if (typeof base._handle_comm_msg !== "function") return;
    real.__explainHealed = true;
    real.comm.on_msg(base._handle_comm_msg.bind(real));
    real.comm.send({ method: "request_state" }, typeof real.callbacks === "function" ? real.callbacks() : {});
  } catch (error) {
    console.warn("explain: could not re-attach a widget model", error);
  }
}

// then() once `root` is in the page: a view may draw before its box is attached, and until it is, nothing around it
// (its output, its step-through or dashboard) can be found; looked for again each frame, for about 2 s
function inPage(root, then, tries = 0) {
  if (root.isConnected) then();
  else if (tries < 120) requestAnimationFrame(() => inPage(root, then, tries + 1));
}

// -- hold ------------------------------------------------------------------------------------------------------
// At the end of each call the kernel sends the output's bundle again (widgets/static.py's _refresh_displays, so the
// saved notebook's static summary is the final one), and JupyterLab's widget renderer answers by replacing the whole
// view: for a moment the output is one line, "Loading widget...", the notebook shrinks, the browser clamps its
// scroll, and the page jumps by the dashboard's height. So the output keeps the height of the view it holds as its
// min-height: the next view is drawn into the same room. A new view (shorter while its parts load) lowers it only
// after HOLD_MS; a view that stays up follows its own height. Elsewhere (an exported page) there is no such output.
const HOLD_MS = 2000;
function hold(root) {
  if (root && root.closest) inPage(root, () => { holdHeight(root); keepScroll(root); });
}
function holdHeight(root) {
  const output = root.closest(".jp-OutputArea-output");
  const content = output ? output.firstElementChild : null;
  if (!content || content.__explainHold || typeof ResizeObserver === "undefined") return;
  content.__explainHold = true;
  const born = performance.now();
  const follow = () => {
    if (!content.isConnected) return; // replaced (its height stays for the next view), or a cell out of the window
    const height = content.getBoundingClientRect().height;
    const held = parseFloat(output.style.minHeight) || 0;
    if (height > 0 && (height >= held || performance.now() - born >= HOLD_MS)) output.style.minHeight = `${height}px`;
  };
  new ResizeObserver(follow).observe(content);
  setTimeout(follow, HOLD_MS);
}

// Chrome's scroll anchoring in JupyterLab's notebook anchors to content below a dashboard: when the step view
// appeared after the prefill (~700 px), the text a reader was looking at jumped off-screen. A notebook with a
// dashboard keeps its scroll position instead (content added below what is read moves nothing). Set on the
// notebook's scrolling boxes themselves: a CSS rule `.jp-Notebook:has(.explain-dashboard)` did the same, but Chrome
// re-checked it on every change inside the notebook, doubling the cost of each chart redraw's style recalculation.
function keepScroll(root) {
  if (!root.closest(".explain-dashboard")) return;
  for (const box of [root.closest(".jp-WindowedPanel-outer"), root.closest(".jp-Notebook")]) {
    if (box && box.style.overflowAnchor !== "none") box.style.overflowAnchor = "none";
  }
}

// A view drawn from the widget state a notebook saved, with no kernel behind it: its buttons, pickers and tokens
// cannot work, so the output says so once (above the step-through or dashboard it belongs to) and greys them out.
function offline(root) {
  if (root && root.closest) inPage(root, () => markOffline(root));
}
function markOffline(root) {
  const host = root.closest(".explain-step-through") || root.closest(".explain-dashboard") || root;
  if (host.classList.contains("explain-offline")) return;
  host.classList.add("explain-offline");
  host.prepend(el("div", "explain-w explain-offline-note", "Saved view: no kernel is behind it, so its buttons, " +
    "pickers and tokens do nothing. Re-run this cell to make it live."));
}

// Presentation mode (the `presentation` trait every view has, base.ViewWidget): <body> is marked, and every view's
// CSS scales its text by --explain-scale (widgets.css); the chart and the trees redraw larger.
function present(model) {
  const apply = () => {
    const on = model.get("presentation");
    if (on === undefined || on === null) return;
    const value = on ? "true" : "false";
    if (document.body.dataset.explainPresentation !== value) document.body.dataset.explainPresentation = value;
  };
  apply();
  model.on("change:presentation", apply);
}

// The scale presentation mode gives the views (1 without it), read from the page's CSS.
function scaleOf(node) {
  return parseFloat(getComputedStyle(node).getPropertyValue("--explain-scale")) || 1;
}
