// Prompt token chips: the token's characters (whitespace made visible), its id; hover for offsets and role.
const ROLE_COLORS = { system: "explain-role-system", user: "explain-role-user", assistant: "explain-role-assistant",
  "generation prompt": "explain-role-generation-prompt", tool: "explain-role-tool" };

function render({ model, el: root }) {
  heal(model, root); // prelude.js
  const box = el("div", "explain-w explain-tokens");
  root.appendChild(box);
  function draw() {
    const tokens = model.get("tokens") || [];
    box.replaceChildren();
    const caption = model.get("caption");
    if (caption) box.appendChild(el("div", "explain-caption", caption));
    const roles = [...new Set(tokens.map((t) => t[5]).filter((r) => r))];
    const legend = el("div", "explain-legend");
    for (const role of roles) {
      const item = el("span");
      item.appendChild(el("span", `explain-swatch ${ROLE_COLORS[role] || "explain-role-tool"}`));
      item.appendChild(document.createTextNode(role));
      legend.appendChild(item);
    }
    if (tokens.some((t) => t[4])) {
      const item = el("span");
      const swatch = el("span", "explain-swatch");
      swatch.style.border = "1px dashed #bc4c00";
      item.appendChild(swatch);
      item.appendChild(document.createTextNode("special token"));
      legend.appendChild(item);
    }
    legend.appendChild(el("span", "", "\u2423 space  \u21b5 newline \u00b7 hover a chip for its characters"));
    box.appendChild(legend);
    const chips = el("div", "explain-chips");
    const hover = el("div", "explain-hover", "\u00a0");
    tokens.forEach(([text, id, start, end, special, role], index) => {
      const chip = el("span", `explain-chip ${role ? ROLE_COLORS[role] || "" : ""}${special ? " special" : ""}`);
      chip.dataset.index = index;
      const describe = `token ${index} \u00b7 id ${id} \u00b7 characters ${start}\u2013${end} ` +
        `\u00b7 ${JSON.stringify(text)}${role ? ` \u00b7 ${role}` : ""}${special ? " \u00b7 special token" : ""}`;
      chip.title = describe;
      chip.addEventListener("mouseenter", () => { hover.textContent = describe; });
      chip.appendChild(el("span", "explain-chip-text", visible(text)));
      chip.appendChild(el("span", "explain-chip-id", String(id)));
      chips.appendChild(chip);
      if (text.includes("\n")) chips.appendChild(el("span", "explain-break"));
    });
    box.appendChild(chips);
    box.appendChild(hover);
  }
  draw();
  model.on("change:tokens", draw);
  model.on("change:caption", draw);
  return () => {
    model.off("change:tokens", draw);
    model.off("change:caption", draw);
  };
}

export default { render };
