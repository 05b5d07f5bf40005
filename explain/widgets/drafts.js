// Assisted decoding, round by round: the drafted tokens (green: accepted, red: the first one rejected, grey: never
// checked), the token the model added itself, and why the rejected one was rejected; above, the acceptance rate and
// the forward passes saved. Draws `data` (explain.features.trees.draft_rounds); writes nothing back. Text via textContent.
// needs: tree.js

function chip(text, kind, tip) {
  const node = el("span", `explain-dv-chip ${kind}`, visible(text));
  node.title = tip;
  return node;
}

function summary(data) {
  const box = el("div", "explain-dv-summary");
  const rate = data.rate === null || data.rate === undefined ? null : data.rate;
  const bar = el("div", "explain-dv-rate");
  const fill = el("span");
  fill.style.width = `${(100 * (rate || 0)).toFixed(1)}%`;
  bar.appendChild(fill);
  box.appendChild(bar);
  box.appendChild(el("span", "explain-dv-fact", rate === null ? "no drafted token yet"
    : `${data.accepted}/${data.drafted} drafted tokens accepted (${(100 * rate).toFixed(0)}%)`));
  box.appendChild(el("span", "explain-dv-fact", `${data.tokens} tokens in ${data.forwards} forward passes of the model` +
    (data.forwards ? ` (${(data.tokens / data.forwards).toFixed(2)} a pass)` : "")));
  return box;
}

function roundView(round) {
  const texts = round.token_texts || {};
  const text = (id) => texts[String(id)] ?? `#${id}`;
  const row = el("div", "explain-dv-round");
  row.appendChild(el("span", "explain-dv-label", `round ${round.round}`));
  const chips = el("span", "explain-dv-chips");
  const rejectedAt = round.rejection ? round.rejection.index : null;
  round.drafted.forEach((id, i) => {
    const q = round.draft_probs ? ` \u00b7 draft p ${Number(round.draft_probs[i]).toFixed(3)}` : "";
    const p = ` \u00b7 model p ${Number(round.target_probs[i]).toFixed(3)}`;
    const kind = i < round.accepted ? "accepted" : i === rejectedAt ? "rejected" : "unchecked";
    chips.appendChild(chip(text(id), kind, `drafted ${JSON.stringify(text(id))} (id ${id}) \u00b7 ${kind}${q}${p}`));
  });
  if (!round.drafted.length) chips.appendChild(el("span", "explain-muted", "no draft"));
  chips.appendChild(el("span", "explain-dv-arrow", "\u2192"));
  const own = round.new_ids[round.new_ids.length - 1];
  if (round.new_ids.length > round.accepted) {
    chips.appendChild(chip(text(own), "own", `the model's own token ${JSON.stringify(text(own))} (id ${own})`));
  }
  row.appendChild(chips);
  const why = round.rejection ? round.rejection.reason
    : round.drafted.length ? `all ${round.drafted.length} accepted; draft ended: ${round.draft_stop}` : round.draft_stop;
  row.appendChild(el("div", "explain-dv-why", why));
  return row;
}

function idleView(rounds) {
  const row = el("div", "explain-dv-round");
  row.appendChild(el("span", "explain-dv-label", `rounds ${rounds[0].round}\u2013${rounds[rounds.length - 1].round}`));
  const chips = el("span", "explain-dv-chips");
  chips.appendChild(el("span", "explain-muted", "no draft"));
  chips.appendChild(el("span", "explain-dv-arrow", "\u2192"));
  for (const round of rounds) {
    const own = round.new_ids[0], text = (round.token_texts || {})[String(own)] ?? `#${own}`;
    chips.appendChild(chip(text, "own", `round ${round.round}: the model's own token ${JSON.stringify(text)} (id ${own})`));
  }
  row.appendChild(chips);
  row.appendChild(el("div", "explain-dv-why", `${rounds[0].draft_stop}: one forward pass a token, as without a draft`));
  return row;
}

export default treePanel("explain-dv", "Drafted vs accepted", (box, data) => {
  if (!data.rounds || !data.rounds.length) return;
  box.appendChild(summary(data));
  const list = el("div", "explain-dv-rounds");
  let i = 0;
  while (i < data.rounds.length) {  // consecutive rounds with nothing drafted, for the same reason: one row
    let j = i;
    while (!data.rounds[i].drafted.length && j + 1 < data.rounds.length && !data.rounds[j + 1].drafted.length &&
           data.rounds[j + 1].draft_stop === data.rounds[i].draft_stop) j += 1;
    list.appendChild(j > i ? idleView(data.rounds.slice(i, j + 1)) : roundView(data.rounds[i]));
    i = j + 1;
  }
  box.appendChild(list);
  box.appendChild(treeLegend([["accepted", "drafted, accepted"], ["rejected", "drafted, rejected"],
    ["unchecked", "drafted after a rejection (dropped)"], ["own", "the model's own token"]]
    .map(([kind, words]) => [el("span", `explain-dv-chip ${kind}`, " "), " " + words])));
});
