// Prepended to each of the dashboard's ES modules (elements.module_source). anywidget gives a widget model 2 s to load
// its module; when the page is busy longer than that (plotly.js evaluating, a chart drawing on a loaded machine)
// it gives up on the model with "[anywidget] Failed to initialize model." and from then on drops every message
// the kernel sends to it, so the view stays as first drawn: a blank chart, an empty text, for good. heal() takes
// the model's messages again (ipywidgets' own handler) and asks the kernel for the whole state once, so a view
// always catches up. It needs the model's id (the `ref` trait) and the page's widget manager; elsewhere (an
// exported page, another manager) it does nothing.
async function heal(model) {
  try {
    const manager = model.widget_manager, ref = model.get("ref");
    if (!ref || !manager || typeof manager.get_model !== "function") return;
    const real = await manager.get_model(ref);
    if (!real || real.__explainHealed || !real.comm || typeof real.comm.on_msg !== "function") return;
    const base = Object.getPrototypeOf(Object.getPrototypeOf(real)); // past anywidget's model, to ipywidgets'
    if (typeof base._handle_comm_msg !== "function") return;
    real.__explainHealed = true;
    real.comm.on_msg(base._handle_comm_msg.bind(real));
    real.comm.send({ method: "request_state" }, typeof real.callbacks === "function" ? real.callbacks() : {});
  } catch (error) {
    console.warn("explain: could not re-attach a widget model", error);
  }
}

