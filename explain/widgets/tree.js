// The part the decoding strategies' panels share (sampling_tree.js, beam_tree.js, drafts.js name it on a line
// "// needs: tree.js", and base.module_source puts it after prelude.js): the panel around a tree (its title, the
// run's caption, drawn again whenever `data` or `caption` changes), the token shaded by its probability, the legend
// of swatches, and an SVG edge from a parent node to a child. Each module draws only its own tree.

// The panel: `body(box, data, click)` draws the tree under the title and caption (nothing when the run has none
// yet). In a dashboard (its `selected` trait set: {sequence, branch, step} on screen) the tree's tokens open their
// step: `click({sequence | branch, step})` writes `clicked`, and `mark(box, selected)` marks the step on screen;
// elsewhere `click` is null and the tree only draws.
function treePanel(className, title, body, mark) {
  function render({ model, el: root }) {
    heal(model, root);
    const box = el("div", `explain-w ${className}`);
    root.appendChild(box);
    let clicks = 0;
    const click = (where) => {
      clicks += 1;
      model.set("clicked", { ...where, n: clicks });
      model.save_changes();
    };
    const selected = () => model.get("selected") || {};
    const listening = () => Object.keys(selected()).length > 0;
    const marked = () => { if (mark) mark(box, selected()); };
    function draw() {
      const data = model.get("data") || {};
      box.replaceChildren();
      box.appendChild(el("div", "explain-caption", title));
      box.appendChild(el("div", "explain-muted", model.get("caption") || ""));
      body(box, data, listening() ? click : null, selected());
      marked();
    }
    draw();
    const handlers = { "change:data": draw, "change:caption": draw, "change:selected": () => (listening() &&
      !box.querySelector(".clickable") ? draw() : marked()) };
    for (const [name, handler] of Object.entries(handlers)) model.on(name, handler);
    return () => { for (const [name, handler] of Object.entries(handlers)) model.off(name, handler); };
  }
  return { render };
}

// A token of a tree, shaded by the probability it was picked with, its step and probability on hover.
function treeToken(className, token, prob, tip) {
  const span = el("span", className, token);
  span.style.background = probColor(prob);
  span.title = tip;
  return span;
}

// A legend: one item per [swatch node, words], in a row under the tree.
function treeLegend(entries, itemClass) {
  const legend = el("div", "explain-legend");
  for (const [swatch, words] of entries) {
    const item = el("span", itemClass || "");
    item.append(swatch, document.createTextNode(words));
    legend.appendChild(item);
  }
  return legend;
}

// An edge from a node's right side (x1, y1) to its child's left side (x2, y2): a horizontal S curve.
function treeEdge(x1, y1, x2, y2, className) {
  const mid = (x1 + x2) / 2;
  return svg("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, class: className });
}
