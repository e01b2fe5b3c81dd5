// unmask playground: runs one or two decoding specs on a prompt through /v1/playground/stream and draws
// every answer position as a cell, grey while masked, coloured by the forward that committed it.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const state = { options: null, columns: [], controller: null, key: sessionStorage.getItem("unmask-key") || "" };

function headers(extra = {}) {
  return state.key ? { ...extra, Authorization: `Bearer ${state.key}` } : extra;
}

function showError(message, target = $("#error")) {
  target.textContent = message;
  target.hidden = !message;
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return `${response.status}: ${body.error.message}`;
  } catch (err) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

function cacheKind(name) {
  return state.options.caches.find((c) => c.name === name);
}

function policyKind(name) {
  return state.options.policies.find((p) => p.name === name);
}

// POLICY[:VALUE][+credit[(...)]][@CACHE[(KNOB=VALUE)]] -> the pickers (best effort: the text stays the truth)
function parseSpec(text) {
  const m = /^([a-z_]+)(?::([^+@(]+))?(\([^)]*\))?(\+credit(?:\([^)]*\))?)?(?:@(.+))?$/.exec(text.trim());
  if (!m) return null;
  const cache = /^([a-z_]+)(?:\(([a-z_]+)=([^)]*)\))?$/.exec(m[5] || "none");
  return { policy: m[1], value: m[2] || "", options: m[3] || "", credit: Boolean(m[4]),
           cache: cache ? cache[1] : "none", cacheValue: cache && cache[3] ? cache[3] : "" };
}

function buildSpec(col) {
  let spec = col.policy.value;
  const value = col.knob.value.trim();
  if (value !== "") spec += `:${value}`;
  const parsed = parseSpec(col.specText.value);  // options typed into the spec stay while the policy does
  if (parsed && parsed.policy === col.policy.value) spec += parsed.options;
  if (col.credit.checked) spec += "+credit";
  const cache = col.cache.value;
  if (cache !== "none") {
    spec += `@${cache}`;
    const kind = cacheKind(cache);
    const knobValue = col.cacheKnob.value.trim();
    if (kind && kind.knobs.length && knobValue !== "") spec += `(${kind.knobs[0].name}=${knobValue})`;
  }
  return spec;
}

function showKnobs(col) {
  const policy = policyKind(col.policy.value);
  col.knobName.textContent = policy ? policy.knob : "value";
  const extra = policy && policy.options.length
    ? `; more options in the spec: ${policy.name}:VALUE(${policy.options.map((o) => `${o.name}=${o.default}`).join(",")})`
    : "";
  col.knob.title = policy ? `${policy.knob} ${policy.allowed}: ${policy.help}${extra}` : "";
  const kind = cacheKind(col.cache.value);
  const knob = kind && kind.knobs.length ? kind.knobs[0] : null;
  col.cacheKnobLabel.hidden = !knob;
  if (knob) {
    col.cacheKnobName.textContent = knob.name;
    col.cacheKnob.title = `${knob.name}: ${knob.allowed}`;
  }
}

function setPickers(col, spec) {
  const parsed = parseSpec(spec);
  if (!parsed) return;
  if (policyKind(parsed.policy)) col.policy.value = parsed.policy;
  col.knob.value = parsed.value;
  col.credit.checked = parsed.credit;
  if (cacheKind(parsed.cache)) col.cache.value = parsed.cache;
  col.cacheKnob.value = parsed.cacheValue;
  showKnobs(col);
}

function makeColumn(root, name, spec) {
  root.append($("#column-template").content.cloneNode(true));
  const col = {
    root, name, policy: $(".policy", root), knob: $(".knob", root), knobName: $(".knob-name", root),
    credit: $(".credit", root), cache: $(".cache", root), cacheKnob: $(".cache-knob", root),
    cacheKnobLabel: $(".cache-knob-label", root), cacheKnobName: $(".cache-knob-name", root),
    specText: $(".spec-text", root), canvas: $(".canvas", root), status: $(".status", root),
    text: $(".text", root), error: $(".column-error", root), forwards: $(".forwards", root),
    tpf: $(".tpf", root), elapsed: $(".elapsed", root), tps: $(".tps", root), cells: [],
  };
  $(".title", root).textContent = `Spec ${name}`;
  for (const p of state.options.policies) col.policy.add(new Option(p.name, p.name));
  for (const c of state.options.caches) col.cache.add(new Option(c.name, c.name));
  for (const input of [col.policy, col.knob, col.credit, col.cache, col.cacheKnob]) {
    input.addEventListener("input", () => { showKnobs(col); col.specText.value = buildSpec(col); });
  }
  col.specText.addEventListener("change", () => setPickers(col, col.specText.value));
  col.specText.value = spec;
  col.specText.setAttribute("aria-label", `Spec ${name}`);
  setPickers(col, spec);
  root.dataset.state = "idle";
  return col;
}

function resetColumn(col, genLength) {
  col.canvas.replaceChildren();
  col.cells = [];
  for (let i = 0; i < genLength; i++) {
    const cell = document.createElement("div");
    cell.className = "cell";
    cell.title = `position ${i}: masked`;
    col.canvas.append(cell);
    col.cells.push(cell);
  }
  col.canvas.setAttribute("aria-label", `answer canvas of ${genLength} positions`);
  col.text.textContent = "";
  col.forwards.textContent = "0";
  col.tpf.textContent = col.elapsed.textContent = col.tps.textContent = "–";
  col.committed = 0;
  col.maxForward = 1;
  showError("", col.error);
}

function shown(text) {
  if (text === "") return "∅";  // a special token (end of text): nothing to print
  if (text.trim() === "" && !/[\n\t]/.test(text)) return "␣".repeat(text.length);  // spaces
  return text.replace(/\n/g, "⏎").replace(/\t/g, "⇥");
}

function recolor(col) {
  const top = Math.max(col.maxForward, 2);
  for (const cell of col.cells) {
    if (!cell.dataset.forward) continue;
    const t = (Number(cell.dataset.forward) - 1) / (top - 1);
    const lightness = 86 - 56 * t;
    cell.style.background = `hsl(${205 - 35 * t} 70% ${lightness}%)`;
    cell.classList.toggle("dark", lightness < 55);
  }
}

function outlineBlock(col, block, blockLength) {
  col.cells.forEach((cell, i) => cell.classList.toggle("block", Math.floor(i / blockLength) === block));
}

function seconds(s) {
  return s < 1 ? `${(1000 * s).toFixed(0)} ms` : `${s.toFixed(2)} s`;
}

function onEvent(col, ev, blockLength) {
  if (ev.type === "start") {
    col.status.textContent = `decoding ${ev.spec} (prompt ${ev.prompt_tokens} tokens)`;
    outlineBlock(col, 0, ev.block_length);
  } else if (ev.type === "step") {
    for (const cell of col.canvas.querySelectorAll(".new")) cell.classList.remove("new");
    for (const pos of ev.remasked || []) {  // a revocable policy took a draft back: masked again
      const cell = col.cells[pos];
      if (!cell || !cell.dataset.forward) continue;
      delete cell.dataset.forward;
      cell.textContent = "";
      cell.style.background = "";
      cell.classList.remove("done", "dark");
      cell.title = `position ${pos}: masked again at forward ${ev.forward}`;
      col.committed -= 1;
    }
    for (const c of ev.commits) {
      const cell = col.cells[c.pos];
      if (!cell) continue;
      if (!cell.dataset.forward) col.committed += 1;  // a position committed again was edited
      cell.textContent = shown(c.text);
      cell.title = `position ${c.pos}: ${JSON.stringify(c.text)} (id ${c.id}), forward ${ev.forward}, confidence ${c.conf}`;
      cell.dataset.forward = ev.forward;
      cell.classList.add("done", "new");
    }
    col.maxForward = Math.max(col.maxForward, ev.forward);
    recolor(col);
    outlineBlock(col, ev.block, blockLength);
    col.forwards.textContent = String(ev.forward);
    col.tpf.textContent = (col.committed / ev.forward).toFixed(2);
    col.elapsed.textContent = seconds(ev.elapsed_s);
  } else if (ev.type === "done") {
    outlineBlock(col, -1, blockLength);
    for (const cell of col.cells) {  // positions past the end of text that early stop never decoded
      if (!cell.dataset.forward) { cell.classList.add("unused"); cell.title += " (not decoded: the answer had ended)"; }
    }
    col.text.textContent = ev.text;
    col.forwards.textContent = String(ev.forwards);
    col.tpf.textContent = (ev.completion_tokens / Math.max(ev.forwards, 1)).toFixed(2);
    col.elapsed.textContent = seconds(ev.elapsed_s);
    col.tps.textContent = (ev.completion_tokens / Math.max(ev.elapsed_s, 1e-9)).toFixed(1);
    col.status.textContent = `done (${ev.finish_reason}): ${ev.completion_tokens} tokens in ${ev.forwards} forwards`;
    col.root.dataset.state = "done";
  } else if (ev.type === "error") {
    showError(ev.message, col.error);
    col.status.textContent = "failed";
    col.root.dataset.state = "error";
  }
}

async function runColumn(col, body, signal) {
  resetColumn(col, body.gen_length);
  col.root.dataset.state = "running";
  col.status.textContent = "waiting for the server";
  const request = { ...body, spec: col.specText.value.trim() };
  try {
    const response = await fetch("/v1/playground/stream", {
      method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(request), signal,
    });
    if (!response.ok) {
      showError(await errorText(response), col.error);
      col.status.textContent = "refused";
      col.root.dataset.state = "error";
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const chunk = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of chunk.split("\n")) {
          if (line.startsWith("data: ")) onEvent(col, JSON.parse(line.slice(6)), body.block_length);
        }
      }
    }
    if (col.root.dataset.state === "running") {
      showError("the stream ended before the answer was done", col.error);
      col.root.dataset.state = "error";
    }
  } catch (err) {
    if (err.name === "AbortError") {
      col.status.textContent = "stopped";
      col.root.dataset.state = "stopped";
    } else {
      showError(`${err.name}: ${err.message}`, col.error);
      col.status.textContent = "failed";
      col.root.dataset.state = "error";
    }
  }
}

function setRunning(running) {
  $("#run").disabled = running;
  $("#stop").disabled = !running;
}

async function run() {
  if ($("#run").disabled) return;
  showError("");
  const prompt = $("#prompt").value;
  const genLength = Number($("#gen-length").value);
  const blockLength = Number($("#block-length").value);
  if (!prompt.trim()) { showError("Write a prompt first."); $("#prompt").focus(); return; }
  if (!Number.isInteger(genLength) || genLength < 1 || !Number.isInteger(blockLength) || blockLength < 1) {
    showError("Answer length and block length must be positive integers."); return;
  }
  const compare = $("#compare").checked;
  const active = compare ? state.columns : state.columns.slice(0, 1);
  state.controller = new AbortController();
  setRunning(true);
  const body = { prompt, gen_length: genLength, block_length: blockLength };
  try {
    await Promise.all(active.map((col) => runColumn(col, body, state.controller.signal)));
  } finally {
    setRunning(false);
    state.controller = null;
  }
}

function stop() {
  if (state.controller) state.controller.abort();
}

async function init() {
  let response;
  try {
    response = await fetch("/v1/playground/options", { headers: headers() });
  } catch (err) {
    showError(`cannot reach the server: ${err.message}`);
    return;
  }
  if (response.status === 401) {  // a server started with --api-key: ask for it (kept for this tab only)
    showError(`${await errorText(response)}. This server needs its API key.`);
    $("#key-row").hidden = false;
    $("#api-key").focus();
    return;
  }
  if (!response.ok) { showError(await errorText(response)); return; }
  $("#key-row").hidden = true;
  showError("");
  state.options = await response.json();
  $("#model-name").textContent = `Model: ${state.options.model}.`;
  $("#block-length").value = state.options.block_length;
  $("#gen-length").max = state.options.max_gen_length;
  state.columns.push(makeColumn($("#col-a"), "A", state.options.compare[0]));
  state.columns.push(makeColumn($("#col-b"), "B", state.options.compare[1]));
  const compare = $("#compare");
  const layout = () => $("#columns").classList.toggle("single", !compare.checked);
  compare.addEventListener("change", layout);
  layout();
  $("#run").addEventListener("click", run);
  $("#stop").addEventListener("click", stop);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); run(); }
    if (ev.key === "Escape") stop();
  });
  document.body.dataset.ready = "true";
}

$("#use-key").addEventListener("click", () => {
  state.key = $("#api-key").value.trim();
  sessionStorage.setItem("unmask-key", state.key);
  if (!state.options) init();
});
init();
