// Engram's web chat: sign in with a token, pick a session, chat, inspect memories.
//
// Every piece of text from the server (messages, memories, errors) reaches
// the page through textContent or the DOM-building Markdown renderer; the
// page never assigns server text to innerHTML.

import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);
const STORAGE_KEY = "engram.signin";

const state = {
  token: null,
  userId: null,
  sessionId: null,
  replies: new Map(), // reply element -> memories [{id, score, content?, occurred_at?}]
  selectedReply: null,
  forgotten: new Set(),
  sending: false,
};

// API

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `The request failed with status ${status}.`);
    this.status = status;
    this.problem = problem;
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: {
      authorization: `Bearer ${state.token}`,
      ...(options.body ? { "content-type": "application/json" } : {}),
      ...options.headers,
    },
  });
  if (!response.ok) {
    let problem = null;
    try {
      problem = await response.json();
    } catch {
      // Not a problem document; the status alone explains it.
    }
    throw new ApiError(response.status, problem);
  }
  return response;
}

const userQuery = () => `user_id=${encodeURIComponent(state.userId)}`;

// Server-Sent Events from a fetch body: yields {event, data}.
async function* readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const blocks = buffer.split(/\r?\n\r?\n/);
    buffer = blocks.pop();
    for (const block of blocks) {
      let event = "message";
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

// Sign-in

function decodeClaims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(
      Array.from(atob(payload), (c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`).join(""),
    );
    return JSON.parse(json);
  } catch {
    return null;
  }
}

function isServiceToken(claims) {
  const scopes = Array.isArray(claims.scopes) ? claims.scopes : [];
  return scopes.some((scope) => scope.startsWith("memory:") || scope === "admin");
}

async function signIn(token, userInput) {
  const claims = decodeClaims(token);
  if (!token) throw new Error("Paste a token first.");
  if (!claims) throw new Error("This is not a token: paste the whole JWT, three parts separated by dots.");
  const userId = isServiceToken(claims) ? userInput : claims.sub;
  if (!userId) throw new Error("This is a service token; enter the user id to act for.");
  state.token = token;
  state.userId = userId;
  await api(`/v1/users/${encodeURIComponent(userId)}/sessions?limit=1`);
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ token, userId }));
}

function signOut() {
  sessionStorage.removeItem(STORAGE_KEY);
  location.hash = "";
  location.reload();
}

function showWorkspace() {
  $("signin").hidden = true;
  $("workspace").hidden = false;
  $("who").hidden = false;
  $("who").textContent = `Signed in as ${state.userId}`;
  $("sign-out").hidden = false;
}

// Sessions

function newSessionId() {
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "").replace("T", "-");
  return `chat-${stamp}-${Math.random().toString(36).slice(2, 6)}`;
}

async function loadSessions() {
  const response = await api(`/v1/users/${encodeURIComponent(state.userId)}/sessions?limit=100`);
  const { sessions } = await response.json();
  const list = $("session-list");
  list.replaceChildren();
  const ids = sessions.map((session) => session.session_id);
  if (state.sessionId && !ids.includes(state.sessionId)) {
    sessions.unshift({ session_id: state.sessionId, window_turns: 0, stored_turns: 0 });
  }
  $("sessions-empty").hidden = sessions.length > 0;
  for (const session of sessions) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = session.session_id;
    const meta = document.createElement("span");
    meta.className = "meta";
    const turns = Math.max(session.window_turns, session.stored_turns);
    meta.textContent = session.last_activity_at
      ? `${turns} ${turns === 1 ? "turn" : "turns"} · ${new Date(session.last_activity_at).toLocaleString()}`
      : "new";
    button.append(meta);
    if (session.session_id === state.sessionId) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => openSession(session.session_id));
    const item = document.createElement("li");
    item.append(button);
    list.append(item);
  }
}

async function openSession(sessionId, isNew = false) {
  state.sessionId = sessionId;
  $("status").textContent = "";
  location.hash = `session=${encodeURIComponent(sessionId)}`;
  state.replies.clear();
  state.selectedReply = null;
  $("messages").replaceChildren();
  showMemories(null);
  await loadSessions();
  if (!isNew) await loadHistory();
  $("message").focus();
}

async function loadHistory() {
  let response;
  try {
    response = await api(
      `/v1/sessions/${encodeURIComponent(state.sessionId)}/turns?${userQuery()}&limit=500`,
    );
  } catch (error) {
    if (error.status === 404) return; // A new session, or its window has expired.
    throw error;
  }
  const { turns } = await response.json();
  let last = null;
  for (const turn of turns) {
    const item = addMessage(turn.role, turn.content);
    const used = turn.metadata?.memories;
    if (turn.role === "assistant" && Array.isArray(used)) {
      attachMemories(
        item,
        used.map((memory) => ({
          id: memory.id,
          score: memory.score,
          kind: memory.kind,
          pinned: memory.pinned,
        })),
      );
      last = item;
    }
  }
  if (last) selectReply(last);
}

// Messages

function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role === "user" ? "You" : role;
  const body = document.createElement("div");
  body.className = "body";
  body.append(renderMarkdown(text));
  item.append(label, body);
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function setMessageText(item, text) {
  item.querySelector(".body").replaceChildren(renderMarkdown(text));
}

function attachMemories(item, memories) {
  state.replies.set(item, memories);
  const button = document.createElement("button");
  button.type = "button";
  button.className = "used secondary";
  button.textContent = memories.length === 1 ? "1 memory used" : `${memories.length} memories used`;
  button.addEventListener("click", () => selectReply(item));
  item.append(button);
}

function selectReply(item) {
  state.selectedReply = item;
  showMemories(state.replies.get(item) ?? null);
}

function showFailure(item, message) {
  const failure = document.createElement("p");
  failure.className = "failure";
  failure.setAttribute("role", "alert");
  failure.textContent = message;
  item.append(failure);
}

async function send(text) {
  state.sending = true;
  $("send").disabled = true;
  $("status").textContent = "Sending…";
  addMessage("user", text);
  const reply = addMessage("assistant", "");
  reply.setAttribute("aria-busy", "true");
  let answer = "";
  try {
    const response = await api("/v1/chat", {
      method: "POST",
      body: JSON.stringify({ user_id: state.userId, session_id: state.sessionId, message: text }),
    });
    $("status").textContent = "Replying…";
    for await (const { event, data } of readEvents(response)) {
      if (event === "context") {
        attachMemories(reply, data.memories);
        selectReply(reply);
      } else if (event === "delta") {
        answer += data.text;
        setMessageText(reply, answer);
      } else if (event === "error") {
        showFailure(reply, `${data.title}: ${data.detail} Your message was saved.`);
      }
    }
    $("status").textContent = "";
  } catch (error) {
    const saved = error.problem?.user_turn_id ? " Your message was saved." : "";
    showFailure(reply, `${error.message}${saved}`);
    $("status").textContent = "";
  } finally {
    reply.removeAttribute("aria-busy");
    state.sending = false;
    $("send").disabled = false;
    loadSessions().catch(() => {});
  }
}

// Memory panel

function showMemories(memories) {
  const list = $("memory-list");
  list.replaceChildren();
  if (memories === null) {
    $("memories-for").textContent = "Send a message to see which memories the reply used.";
    return;
  }
  $("memories-for").textContent = memories.length
    ? "The long-term memories given to the model for the selected reply, best match first."
    : "No long-term memory was relevant to this reply.";
  for (const memory of memories) list.append(memoryItem(memory));
}

function memoryItem(memory) {
  const item = document.createElement("li");
  item.dataset.memoryId = memory.id;
  const score = document.createElement("span");
  score.className = "score";
  // Pinned memories are in every context, so no search gave them a score.
  const label = memory.pinned ? "pinned" : `score ${Number(memory.score).toFixed(3)}`;
  score.textContent = memory.kind && memory.kind !== "turn" ? `${memory.kind} · ${label}` : label;
  const content = document.createElement("p");
  content.className = "content";
  content.textContent = memory.content ?? "Loading…";
  if (memory.content === undefined) fillMemory(item, memory);
  const actions = document.createElement("div");
  actions.className = "actions";
  const open = document.createElement("button");
  open.type = "button";
  open.className = "secondary";
  open.textContent = "Open";
  open.setAttribute("aria-label", `Open memory: ${shorten(memory.content ?? memory.id)}`);
  open.addEventListener("click", () => openMemory(memory.id));
  const forget = document.createElement("button");
  forget.type = "button";
  forget.className = "danger";
  forget.textContent = "Forget";
  forget.setAttribute("aria-label", `Forget memory: ${shorten(memory.content ?? memory.id)}`);
  // Forgetting cannot be undone, so it always goes through the dialog.
  forget.addEventListener("click", () => openMemory(memory.id));
  actions.append(open, forget);
  item.append(score, content, actions);
  if (state.forgotten.has(memory.id)) markForgotten(item);
  return item;
}

async function fillMemory(item, memory) {
  try {
    const response = await api(`/v1/memories/${memory.id}?${userQuery()}`);
    const stored = await response.json();
    memory.content = stored.content;
    item.querySelector(".content").textContent = stored.content;
    const [open, forget] = item.querySelectorAll(".actions button");
    open.setAttribute("aria-label", `Open memory: ${shorten(stored.content)}`);
    forget.setAttribute("aria-label", `Forget memory: ${shorten(stored.content)}`);
  } catch (error) {
    item.querySelector(".content").textContent =
      error.status === 404 ? "This memory no longer exists." : error.message;
    if (error.status === 404) {
      state.forgotten.add(memory.id);
      markForgotten(item);
    }
  }
}

function shorten(text) {
  return text.length > 60 ? `${text.slice(0, 57)}…` : text;
}

function markForgotten(item) {
  item.classList.add("forgotten");
  for (const button of item.querySelectorAll("button")) button.disabled = true;
  const note = document.createElement("span");
  note.className = "hint";
  note.textContent = " Forgotten";
  item.querySelector(".score").append(note);
}

async function openMemory(id) {
  const details = $("memory-details");
  details.replaceChildren();
  const dialog = $("memory-dialog");
  dialog.dataset.memoryId = id;
  try {
    const response = await api(`/v1/memories/${id}?${userQuery()}`);
    const memory = await response.json();
    const rows = [
      ["Content", memory.content],
      ["Said by", memory.role ?? memory.kind],
      ["When", new Date(memory.occurred_at).toLocaleString()],
      ["Session", memory.session_id ?? "none"],
      ["Id", memory.id],
    ];
    for (const [term, value] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      details.append(dt, dd);
    }
    $("memory-forget").disabled = false;
  } catch (error) {
    const dd = document.createElement("dd");
    dd.textContent = error.status === 404 ? "This memory no longer exists." : error.message;
    details.append(dd);
    $("memory-forget").disabled = true;
  }
  dialog.showModal();
}

async function forgetMemory(id) {
  try {
    await api(`/v1/memories/${id}?${userQuery()}&purge_history=true`, { method: "DELETE" });
    $("status").textContent = "Memory forgotten.";
  } catch (error) {
    if (error.status !== 404) {
      $("status").textContent = error.message;
      return;
    }
    $("status").textContent = "That memory was already gone.";
  }
  state.forgotten.add(id);
  for (const item of $("memory-list").querySelectorAll("li")) {
    if (item.dataset.memoryId === id && !item.classList.contains("forgotten")) markForgotten(item);
  }
}

// Wiring

function sessionFromHash() {
  const match = /session=([^&]+)/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

async function start() {
  showWorkspace();
  const saved = sessionFromHash();
  await openSession(saved ?? newSessionId(), saved === null);
}

function wire() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("signin-error").textContent = "";
    try {
      await signIn($("token").value.trim(), $("user-id").value.trim());
      await start();
    } catch (error) {
      $("signin-error").textContent =
        error.status === 401 ? "The token was not accepted: it may be expired or signed with another secret." : error.message;
    }
  });
  $("sign-out").addEventListener("click", signOut);
  $("new-chat").addEventListener("click", () => openSession(newSessionId(), true));
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("message").value;
    if (state.sending) return;
    if (!text.trim()) {
      $("status").textContent = "Type a message first.";
      return;
    }
    $("message").value = "";
    send(text);
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("memory-close").addEventListener("click", () => $("memory-dialog").close());
  $("memory-forget").addEventListener("click", async () => {
    await forgetMemory($("memory-dialog").dataset.memoryId);
    $("memory-dialog").close();
  });
}

async function resume() {
  const saved = sessionStorage.getItem(STORAGE_KEY);
  if (!saved) return;
  try {
    const { token, userId } = JSON.parse(saved);
    state.token = token;
    state.userId = userId;
    await start();
  } catch {
    sessionStorage.removeItem(STORAGE_KEY);
    $("signin").hidden = false;
    $("workspace").hidden = true;
  }
}

wire();
resume();
