// charops playground: chat, arena, leaderboard. Plain JS, no build step.
// Rule: text written by a model or a user only ever goes into the page through textContent
// (or an input's value); nothing here parses strings as HTML.
"use strict";

const API = "/playground/api";
let INFO = null;
let conv = null;          // the chat conversation (see newConversation)
let arenaMatch = null;    // the current arena match {match, character, ...}

// -- small helpers ------------------------------------------------------------------------
function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}
function status(text) { document.getElementById("status").textContent = text || ""; }
function uuid() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
function character(name) { return INFO.characters.find((c) => c.name === name) || null; }
function fillSelect(select, items) {
  select.replaceChildren(...items.map((v) => el("option", { value: v }, v)));
}

// POST JSON; a retry resends the same body (same event id), so it is harmless.
async function postJSON(path, body, tries = 3) {
  let last = null;
  for (let i = 0; i < tries; i++) {
    try {
      const r = await fetch(API + path, { method: "POST", headers: { "content-type": "application/json" },
                                          body: JSON.stringify(body) });
      const data = await r.json().catch(() => ({}));
      if (r.status >= 500) { last = new Error((data.error && data.error.message) || r.statusText); continue; }
      if (!r.ok) throw new Error((data.error && data.error.message) || r.statusText);
      return data;
    } catch (e) {
      last = e;
      if (!(e instanceof TypeError)) throw e;  // TypeError: the network failed; retry
    }
    await new Promise((res) => setTimeout(res, 300 * (i + 1)));
  }
  throw last;
}

// -- feedback events ----------------------------------------------------------------------
function eventFor(turn, action) {
  return {
    id: uuid(), at: new Date().toISOString(), source: "playground", model: turn.model,
    character: conv.character, category: (character(conv.character) || {}).category || null,
    topic: conv.topic, conversation: conv.id, turn: turn.index, messages: turn.rendered,
    candidates: turn.candidates.map((c, i) => ({ text: c.text, position: i, sampling: c.sampling })),
    action,
  };
}
let inFlight = 0;  // feedback events not yet answered (tests and the status line wait on it)
function busy(delta) {
  inFlight += delta;
  document.body.dataset.pending = String(inFlight);
}
async function sendEvent(turn, action) {
  busy(1);
  try {
    const r = await postJSON("/feedback", eventFor(turn, action));
    status(`feedback stored (${action.kind})`);
    return r;
  } catch (e) {
    status(`feedback not stored: ${e.message}`);
    return null;
  } finally {
    busy(-1);
  }
}

// -- chat ---------------------------------------------------------------------------------
function newConversation(parent) {
  const name = document.getElementById("character").value;
  conv = { id: uuid(), parent: parent || null, character: name,
           topic: document.getElementById("topic").value, turns: [] };
  const c = character(name);
  if (c && c.greeting) conv.turns.push({ role: "assistant", greeting: true, text: c.greeting });
  renderChat();
}
function shownText(turn) {
  if (turn.role === "user" || turn.greeting) return turn.text;
  const c = turn.candidates[turn.shown];
  if (!c) return "";  // still waiting for the first token
  return c.edited !== undefined ? c.edited : c.text;
}
function history(upto) {
  return conv.turns.slice(0, upto).map((t) => ({ role: t.role, content: shownText(t) }));
}

function renderChat() {
  const box = document.getElementById("messages");
  box.replaceChildren(...conv.turns.map((t, i) => renderTurn(t, i)));
  box.lastElementChild && box.lastElementChild.scrollIntoView({ block: "end" });
}

function renderTurn(turn, i) {
  const node = el("div", { class: `msg ${turn.role}`, "data-index": String(i) });
  const text = el("div", { class: "text" }, shownText(turn));
  node.append(text);
  const tools = el("div", { class: "tools" });
  if (turn.role === "assistant" && !turn.greeting && turn.candidates.length) {
    const n = turn.candidates.length;
    const prev = el("button", { class: "prev", title: "previous candidate" }, "◀");
    const count = el("span", { class: "count" }, `${turn.shown + 1}/${n}`);
    const next = el("button", { class: "next", title: "next candidate" }, "▶");
    prev.disabled = turn.shown === 0 || turn.pending;
    next.disabled = turn.shown >= n - 1 || turn.pending;
    prev.onclick = () => { turn.shown--; renderChat(); };
    next.onclick = () => { turn.shown++; renderChat(); };
    const regen = el("button", { class: "regen", title: "sample more candidates" }, "↻ regenerate");
    regen.disabled = turn.pending || i !== conv.turns.length - 1;
    regen.onclick = () => generate(turn, true);
    const edit = el("button", { class: "edit" }, "✎ edit");
    edit.disabled = turn.pending;
    edit.onclick = () => startEdit(node, turn);
    const up = el("button", { class: "up", title: "thumbs up: a good reply" }, "+1");
    const down = el("button", { class: "down", title: "thumbs down: a bad reply" }, "−1");
    const reason = el("input", { class: "reason", placeholder: "reason (optional)", maxlength: "2000" });
    const cand = turn.candidates[turn.shown];
    if (cand.thumbs === true) up.classList.add("on");
    if (cand.thumbs === false) down.classList.add("on");
    up.onclick = () => thumbs(turn, true, reason.value);
    down.onclick = () => thumbs(turn, false, reason.value);
    tools.append(prev, count, next, regen, edit, up, down, reason);
    const stars = el("span", { class: "stars" });
    for (let s = 1; s <= 4; s++) {
      const b = el("button", { class: "star", "data-n": String(s), title: `${s} of 4` }, s <= (cand.stars || 0) ? "★" : "☆");
      b.onclick = () => rate(turn, s);
      stars.append(b);
    }
    tools.append(stars);
  }
  const branch = el("button", { class: "branch", title: "new conversation from here" }, "branch");
  branch.onclick = () => branchAt(i);
  tools.append(branch);
  node.append(tools);
  return node;
}

function startEdit(node, turn) {
  const area = el("textarea", { class: "edit-text" });
  area.value = shownText(turn);
  const save = el("button", { class: "save-edit" }, "Save");
  save.onclick = async () => {
    const cand = turn.candidates[turn.shown];
    const text = area.value;
    const changed = text.trim() && text !== cand.text;
    if (changed) cand.edited = text;
    renderChat();
    if (changed) await sendEvent(turn, { kind: "edit", candidate: turn.shown, text });
  };
  node.querySelector(".text").replaceChildren(area, save);
}

async function thumbs(turn, up, reason) {
  const cand = turn.candidates[turn.shown];
  cand.thumbs = up;
  renderChat();
  const action = { kind: "thumbs", candidate: turn.shown, up };
  if (reason && reason.trim()) action.reason = reason.trim();
  await sendEvent(turn, action);
}

async function rate(turn, stars) {
  turn.candidates[turn.shown].stars = stars;
  renderChat();
  await sendEvent(turn, { kind: "stars", candidate: turn.shown, stars });
}

function branchAt(i) {
  const keep = conv.turns.slice(0, i + 1).map((t) => JSON.parse(JSON.stringify(t)));
  conv = { ...conv, id: uuid(), parent: conv.id, turns: keep };
  status("branched: a new conversation from that message");
  renderChat();
}

async function generate(turn, more) {
  const idx = conv.turns.indexOf(turn);
  const n = Number(document.getElementById("n").value);
  turn.pending = true;
  document.body.dataset.generating = "1";
  const first = turn.candidates.length;
  const body = { character: conv.character, messages: history(idx), n,
                 temperature: Number(document.getElementById("temperature").value) };
  status("generating...");
  let r;
  try {
    r = await fetch(API + "/chat", { method: "POST", headers: { "content-type": "application/json" },
                                     body: JSON.stringify(body) });
  } catch (e) { turn.pending = false; document.body.dataset.generating = "0"; status(`error: ${e.message}`); renderChat(); return; }
  if (!r.ok) {
    const data = await r.json().catch(() => ({}));
    turn.pending = false;
    document.body.dataset.generating = "0";
    status(`error: ${(data.error && data.error.message) || r.statusText}`);
    if (!turn.candidates.length) conv.turns.splice(idx, 1);
    renderChat();
    return;
  }
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      if (!frame.startsWith("data: ")) continue;
      const ev = JSON.parse(frame.slice(6));
      if (ev.type === "start") {
        turn.rendered = ev.rendered;
        turn.model = ev.model;
        for (const c of ev.candidates) turn.candidates.push({ text: "", sampling: c.sampling });
        if (more) turn.shown = first;
      } else if (ev.type === "delta") {
        turn.candidates[first + ev.candidate].text += ev.text;
      } else if (ev.type === "done") {
        turn.candidates[first + ev.candidate].text = ev.text;
      }
      renderChat();
    }
  }
  turn.pending = false;
  document.body.dataset.generating = "0";
  status("");
  renderChat();
}

async function send(e) {
  e.preventDefault();
  const input = document.getElementById("input");
  const text = input.value;
  if (!text.trim()) return;
  input.value = "";
  // Going on from a turn that had several candidates: the one shown was chosen over the rest.
  const last = conv.turns[conv.turns.length - 1];
  if (last && last.role === "assistant" && !last.greeting && last.candidates.length > 1) {
    sendEvent(last, { kind: "choose", candidate: last.shown, continued: true });
  }
  conv.turns.push({ role: "user", text });
  const turn = { role: "assistant", candidates: [], shown: 0, pending: true,
                 index: conv.turns.filter((t) => t.role === "user").length - 1 };
  conv.turns.push(turn);
  renderChat();
  await generate(turn, false);
}

// -- arena --------------------------------------------------------------------------------
function arenaGreeting() {
  const c = character(document.getElementById("arena-character").value);
  document.getElementById("arena-greeting").textContent = c && c.greeting ? c.greeting : "";
}
function setVoting(on) {
  for (const id of ["vote-a", "vote-b", "vote-tie", "vote-bad"]) document.getElementById(id).disabled = !on;
}
async function arenaAsk(e) {
  e.preventDefault();
  const input = document.getElementById("arena-input");
  const text = input.value;
  if (!text.trim()) return;
  const name = document.getElementById("arena-character").value;
  const c = character(name);
  const messages = [];
  if (c && c.greeting) messages.push({ role: "assistant", content: c.greeting });
  messages.push({ role: "user", content: text });
  for (const side of ["arena-a", "arena-b"]) {
    document.querySelector(`#${side} .text`).textContent = "...";
    document.querySelector(`#${side} .who`).textContent = "";
  }
  document.getElementById("arena-result").textContent = "";
  setVoting(false);
  try {
    const r = await postJSON("/arena", { character: name, messages, conversation: uuid(), turn: 0,
                                         topic: document.getElementById("arena-topic").value }, 1);
    arenaMatch = r;
    const [a, b] = r.candidates.sort((x, y) => x.position - y.position);
    document.querySelector("#arena-a .text").textContent = a.text;
    document.querySelector("#arena-b .text").textContent = b.text;
    setVoting(true);
  } catch (err) {
    document.getElementById("arena-result").textContent = `error: ${err.message}`;
  }
}
async function arenaVote(winner) {
  if (!arenaMatch) return;
  setVoting(false);
  const body = { match: arenaMatch.match, id: uuid(), at: new Date().toISOString(), winner };
  try {
    const r = await postJSON("/arena/vote", body);
    document.querySelector("#arena-a .who").textContent = `A was ${r.reveal.a}`;
    document.querySelector("#arena-b .who").textContent = `B was ${r.reveal.b}`;
    document.getElementById("arena-result").textContent = r.anonymous
      ? "vote counted" : "vote not counted: a reply named its model, so the vote was not blind";
  } catch (err) {
    document.getElementById("arena-result").textContent = `error: ${err.message}`;
  }
  arenaMatch = null;
}

// -- leaderboard --------------------------------------------------------------------------
function fmt(x, d = 2) { return x === null || x === undefined ? "–" : Number(x).toFixed(d); }
function table(node, head, rows) {
  const t = node.tagName === "TABLE" ? node : el("table");
  const tr = el("tr");
  head.forEach((h) => tr.append(el("th", {}, h)));
  t.replaceChildren(tr, ...rows.map((r) => {
    const row = el("tr");
    r.forEach((cell) => row.append(el("td", {}, String(cell))));
    return row;
  }));
  return t;
}
function btRows(list) {
  return list.map((r, i) => [`${i + 1}. ${r.model}`, fmt(r.score), `[${fmt(r.ci95[0])}, ${fmt(r.ci95[1])}]`, r.n]);
}
async function loadBoard() {
  const r = await fetch(API + "/leaderboard");
  const b = await r.json();
  document.getElementById("board-votes").textContent = `${b.votes} counted vote(s)` +
    (b.production ? `; production: ${b.production}` : "");
  const head = ["model", "score", "95% CI", "votes"];
  table(document.getElementById("board-overall"), head, btRows(b.overall));
  table(document.getElementById("board-production"), ["model", "win %", "tie %", "lose %", "Advantage", "95% CI", "n", "sign test p"],
        Object.entries(b.against_production).map(([m, t]) => [m, fmt(t.win, 1), fmt(t.tie, 1), fmt(t.lose, 1),
          fmt(t.advantage, 1), t.advantage_ci95 ? `[${fmt(t.advantage_ci95[0], 1)}, ${fmt(t.advantage_ci95[1], 1)}]` : "–",
          t.n, fmt(t.sign_test_p, 3)]));
  for (const [key, id] of [["by_category", "board-category"], ["by_topic", "board-topic"]]) {
    const box = document.getElementById(id);
    box.replaceChildren(...Object.entries(b[key]).flatMap(([g, list]) => [el("h3", {}, g), table(el("table"), head, btRows(list))]));
  }
}

// -- start --------------------------------------------------------------------------------
function showTab(name) {
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === name);
  for (const p of document.querySelectorAll(".panel")) p.classList.toggle("hidden", p.id !== name);
  if (name === "board") loadBoard().catch((e) => status(`error: ${e.message}`));
}

async function start() {
  const r = await fetch(API + "/info");
  INFO = await r.json();
  document.getElementById("model-name").textContent = INFO.model.label ||
    (INFO.model.version ? `${INFO.model.name} v${INFO.model.version}` : INFO.model.name);
  const names = INFO.characters.map((c) => c.name);
  fillSelect(document.getElementById("character"), names);
  fillSelect(document.getElementById("arena-character"), names);
  fillSelect(document.getElementById("topic"), INFO.topics);
  fillSelect(document.getElementById("arena-topic"), INFO.topics);
  if (!INFO.arena) {
    document.getElementById("arena-send").disabled = true;
    document.getElementById("arena-result").textContent =
      "the arena needs two models: start the playground with --arena (see docs/playground.md)";
  }
  for (const b of document.querySelectorAll(".tab")) b.onclick = () => showTab(b.dataset.tab);
  document.getElementById("character").onchange = () => newConversation();
  document.getElementById("topic").onchange = (e) => { conv.topic = e.target.value; };
  document.getElementById("reset").onclick = () => newConversation();
  document.getElementById("chat-form").onsubmit = send;
  document.getElementById("arena-form").onsubmit = arenaAsk;
  document.getElementById("arena-character").onchange = arenaGreeting;
  for (const id of ["vote-a", "vote-b", "vote-tie", "vote-bad"]) {
    const b = document.getElementById(id);
    b.onclick = () => arenaVote(b.dataset.winner);
  }
  document.getElementById("board-refresh").onclick = () => loadBoard();
  newConversation();
  arenaGreeting();
  document.body.dataset.pending = "0";
  document.body.dataset.ready = "1";
}

start().catch((e) => status(`error: ${e.message}`));
