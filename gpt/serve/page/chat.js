// The chat page of `tinygpt serve`: keeps the conversation, posts it to /v1/chat/completions with stream: true,
// and appends each server-sent chunk's delta to the answer as it arrives. No build step, nothing from the internet.
"use strict";

const $ = (id) => document.getElementById(id);
const turns = [];            // {role, content} turns sent with every request (multi-turn)
let modelId = null;
let controller = null;       // aborts the running request (the Stop button)

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = text;
  $("log").appendChild(div);
  div.scrollIntoView({block: "end"});
  return div;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models");
    const body = await r.json();
    modelId = body.data[0].id;
    $("model").textContent = `${modelId} · context ${body.data[0].context_length}`;
  } catch (e) {
    showError(`cannot reach the server: ${e.message}`);
  }
}

function requestBody() {
  const body = {model: modelId, messages: turns, stream: true};
  const t = parseFloat($("temperature").value), k = parseInt($("top-k").value, 10);
  const m = parseInt($("max-tokens").value, 10);
  if (!Number.isNaN(t)) body.temperature = t;
  if (!Number.isNaN(k)) body.top_k = k;
  if (!Number.isNaN(m)) body.max_tokens = m;
  return body;
}

// Server-sent events: blank-line separated; every `data:` line holds one JSON chunk, or [DONE] at the end.
async function readEvents(response, onDelta) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, {stream: true});
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        const delta = JSON.parse(data).choices[0]?.delta?.content;
        if (delta) onDelta(delta);
      }
    }
  }
}

async function send(text) {
  showError("");
  turns.push({role: "user", content: text});
  addMessage("user", text);
  const answer = addMessage("assistant", "");
  answer.classList.add("streaming");
  controller = new AbortController();
  setBusy(true);
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(requestBody()), signal: controller.signal,
    });
    if (!r.ok) {
      let message = `${r.status} ${r.statusText}`;
      try { message = `${r.status}: ${(await r.json()).error.message}`; } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    await readEvents(r, (delta) => { answer.textContent += delta; answer.scrollIntoView({block: "end"}); });
  } catch (e) {
    if (e.name !== "AbortError") {
      showError(e.message);
    }
  } finally {
    answer.classList.remove("streaming");
    if (answer.textContent) {
      turns.push({role: "assistant", content: answer.textContent});
    } else {
      answer.remove();
      turns.pop();   // no answer (refused or stopped at once): the question is not part of the history
    }
    controller = null;
    setBusy(false);
  }
}

$("form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("input").value.trim();
  if (!text || controller) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("form").requestSubmit(); }
});
$("stop").addEventListener("click", () => { if (controller) controller.abort(); });
$("clear").addEventListener("click", () => {
  if (controller) controller.abort();
  turns.length = 0;
  $("log").replaceChildren();
  showError("");
});
loadModel();
