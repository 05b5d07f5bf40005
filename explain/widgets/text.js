// The generated text, token by token: each span shaded by the probability the token was chosen with.
// Click a token to show its step; arrow keys move the selection. New tokens are appended, not redrawn.
function render({ model, el: root }) {
  heal(model, root); // prelude.js
  const box = el("div", "explain-w explain-gen");
  const status = el("div", "explain-gen-status");
  const count = el("span", "explain-gen-count", "0");
  const words = el("span", "explain-muted");
  status.append(count, words);
  const text = el("div", "explain-gen-text");
  text.tabIndex = 0;
  const prefix = el("span", "explain-prefix");
  const cursor = el("span", "explain-cursor");
  const legend = el("div", "explain-legend");
  const scale = el("span");
  scale.append(document.createTextNode("probability: unlikely "), el("span", "explain-scale"),
    document.createTextNode(" confident"));
  legend.append(scale, el("span", "", "\u00b7 wavy underline: forced token \u00b7 click a token to see its step " +
    "(\u2190 \u2192 to move)"));
  box.append(status, text, legend);
  root.appendChild(box);

  let spans = [];
  let key = null;

  function select(index) {
    model.set("selected", index);
    model.save_changes();
  }

  function addToken([token, prob, forced], index) {
    const span = el("span", `explain-token${forced ? " forced" : ""}`, token);
    span.dataset.step = index;
    // a line break has no width: a visible mark (CSS, not text, so the text stays the model's) keeps it clickable
    if (token.includes("\n")) span.classList.add("explain-nl");
    span.style.background = probColor(prob);
    span.title = `step ${index} \u00b7 p = ${fixed(prob, 3)}` +
      `${forced ? " \u00b7 forced" : ""}`;
    span.addEventListener("click", () => select(index));
    text.insertBefore(span, cursor);
    spans.push(span);
  }

  function drawTokens() {
    const tokens = model.get("tokens") || [];
    if (model.get("key") !== key || tokens.length < spans.length) {
      key = model.get("key");
      spans = [];
      text.replaceChildren(prefix, cursor);
    }
    // the prompt of the call on screen, whichever of key, tokens and prefix arrived first (an exported page's
    // picker sets them one by one)
    if (prefix.textContent !== (model.get("prefix") || "")) prefix.textContent = model.get("prefix") || "";
    for (let i = spans.length; i < tokens.length; i++) addToken(tokens[i], i);
    count.textContent = String(tokens.length);
    drawSelected();
    drawStatus();
    if (model.get("running")) text.scrollTop = text.scrollHeight;
  }

  function drawSelected() {
    const selected = model.get("selected");
    for (const span of text.querySelectorAll(".explain-token.selected")) span.classList.remove("selected");
    const index = selected < 0 ? spans.length - 1 : selected;
    if (selected >= 0 && spans[index]) spans[index].classList.add("selected");
  }

  function drawStatus() {
    words.textContent = model.get("status") || "";
    cursor.style.display = model.get("running") ? "inline-block" : "none";
  }

  text.addEventListener("keydown", (event) => {
    if (!spans.length || (event.key !== "ArrowLeft" && event.key !== "ArrowRight")) return;
    const current = model.get("selected") < 0 ? spans.length - 1 : model.get("selected");
    const next = Math.max(0, Math.min(spans.length - 1, current + (event.key === "ArrowLeft" ? -1 : 1)));
    select(next);
    event.preventDefault();
  });

  drawTokens();
  const handlers = { "change:tokens": drawTokens, "change:key": drawTokens, "change:prefix": drawTokens,
    "change:selected": drawSelected, "change:status": drawStatus, "change:running": drawStatus };
  for (const [name, handler] of Object.entries(handlers)) model.on(name, handler);
  return () => { for (const [name, handler] of Object.entries(handlers)) model.off(name, handler); };
}

export default { render };
