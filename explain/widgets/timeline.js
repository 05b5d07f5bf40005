// The stage timeline: one row per pipeline stage (dot, name, bar, time, facts). Text goes in via textContent.
function render({ model, el: root }) {
  heal(model, root); // prelude.js
  const box = el("div", "explain-w explain-timeline");
  root.appendChild(box);
  function draw() {
    const rows = model.get("rows") || [];
    const longest = Math.max(1e-9, ...rows.map((r) => r.seconds || 0));
    box.replaceChildren();
    const caption = model.get("caption");
    if (caption) box.appendChild(el("div", "explain-caption", caption));
    let group = null;
    for (const row of rows) {
      if (row.group !== group) {
        group = row.group;
        box.appendChild(el("div", "explain-tl-group", group));
      }
      const line = el("div", `explain-tl-row explain-status-${row.status}`);
      line.dataset.stage = row.stage;
      line.title = `${row.stage}: ${row.status}`;
      line.appendChild(el("span", "explain-tl-dot"));
      line.appendChild(el("span", "explain-tl-stage", row.stage));
      const bar = el("span", "explain-tl-bar");
      const fill = el("span");
      fill.style.width = `${(100 * (row.seconds || 0)) / longest}%`;
      bar.appendChild(fill);
      line.appendChild(bar);
      line.appendChild(el("span", "explain-tl-time", row.time || (row.status === "waiting" ? "\u2014" : "")));
      const facts = el("span", "explain-tl-facts");
      for (const fact of row.facts || []) if (fact) facts.appendChild(el("span", "explain-fact", fact));
      line.appendChild(facts);
      box.appendChild(line);
    }
  }
  draw();
  model.on("change:rows", draw);
  model.on("change:caption", draw);
  return () => {
    model.off("change:rows", draw);
    model.off("change:caption", draw);
  };
}

export default { render };
