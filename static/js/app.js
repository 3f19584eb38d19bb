// The chat page: keeps per-dialogue state keyed by dialogue id, applies protocol
// frames (shared/protocol.md) to it and renders the open dialogue. Only a streaming
// reply re-renders, at most once per animation frame.
import { ApiError, api } from "./api.js";
import { Attachments } from "./attachments.js";
import { firstPaintTitle, showsFirstPaint } from "./firstpaint.js";
import { ImportDialog } from "./import.js";
import { _, fmt, longTime } from "./i18n.js";
import { MessageView } from "./messages.js";
import { Outbox, newClientId } from "./outbox.js";
import { ReportDialog } from "./report.js";
import { dialogueFromLocation, showInUrl } from "./route.js";
import { SettingsPanel } from "./settings.js";
import { ShareDialog } from "./share.js";
import { Sidebar, dialogueTitle } from "./sidebar.js";
import { ChatSocket } from "./socket.js";

const NEW = "new"; // the key of the conversation not created yet
const root = document.getElementById("chat-app");
const messagesEl = document.getElementById("messages");
const listEl = document.getElementById("message-list");
const emptyEl = document.getElementById("empty-state");
const composer = document.getElementById("composer");
const input = document.getElementById("composer-input");
const sendButton = document.getElementById("send-button");
const stopButton = document.getElementById("stop-button");
const jumpButton = document.getElementById("jump-bottom");
const titleEl = document.getElementById("dialogue-title");
const announcer = document.getElementById("announcer");
const alertsEl = document.getElementById("composer-alerts");
const connEl = document.getElementById("conn-state");
const fileInput = document.getElementById("file-input");
const filesEl = document.getElementById("composer-files");

const socket = new ChatSocket(root.dataset.wsPath);
const outbox = new Outbox();
const convs = new Map(); // dialogue id (string) or NEW -> conversation
const views = new Map(); // message key -> MessageView, for the open dialogue only
const dirty = new Set(); // streaming messages to paint on the next frame
let frameRequested = false;
let current = null; // the open dialogue's id as a string, null for a new one
let follow = true; // keep the newest text in view
let editing = null; // the user message being edited
let openStartedAt = null;
let editingAttachments = []; // the files of the message being edited (kept by the edit)
let waitingForUploads = false;

/** Ids travel as JSON integers or UUID strings; the URL and the DOM hold strings. */
function wireId(id) {
  return /^\d+$/.test(String(id)) ? Number(id) : id;
}
const key = (id) => (id == null ? NEW : String(id));
const msgKey = (m) => (m.id != null ? `m:${m.id}` : `c:${m.client_id}`);

function conv(id) {
  const k = key(id);
  let c = convs.get(k);
  if (!c) {
    c = { messages: [], loaded: false, hasMore: false, awaitingState: false, loadingHistory: false };
    convs.set(k, c);
  }
  return c;
}

function findMessage(c, m) {
  return c.messages.find(
    (x) => (m.id != null && x.id === m.id) || (m.client_id && x.client_id === m.client_id && x.role === m.role),
  );
}

/** Store `m` in `c`, never moving a streaming reply's text backwards. */
function upsertMessage(c, m) {
  const existing = findMessage(c, m);
  if (!existing) {
    const fresh = { ...m, renderedSeq: 0 };
    c.messages.push(fresh);
    return fresh;
  }
  const keepText = m.status === "streaming" && existing.status === "streaming" && (existing.seq || 0) > (m.seq || 0);
  const { content, seq } = existing;
  delete existing.pending;
  Object.assign(existing, m);
  if (keepText) Object.assign(existing, { content, seq });
  return existing;
}

const sidebar = new Sidebar({
  onSelect: (id) => openDialogue(id),
  onDeleted: (id) => forgetDialogue(id),
  onError: (err) => showError(err),
});

const settings = new SettingsPanel({
  getDialogue: () => (current ? sidebar.get(current) || { id: wireId(current) } : null),
  onSaved: (dialogue) => {
    sidebar.upsert(dialogue);
    showTitle();
  },
  onCreate: (dialogue) => {
    sidebar.upsert(dialogue);
    conv(dialogue.id).loaded = true;
    openDialogue(dialogue.id);
  },
  onError: (err) => showError(err),
});

// --- Opening and showing dialogues ------------------------------------------------

function openDialogue(id, { replace = false } = {}) {
  current = key(id);
  editing = null;
  setEditing(null);
  showInUrl(current, { replace });
  sidebar.setActive(current);
  showTitle();
  follow = true;
  renderPane();
  requestOpen(current);
  closeDrawer();
}

function newDialogue() {
  current = null;
  setEditing(null);
  showInUrl(null);
  sidebar.setActive(null);
  showTitle();
  renderPane();
  closeDrawer();
  input.focus();
}

function forgetDialogue(id) {
  convs.delete(key(id));
  sidebar.remove(id);
  if (current === key(id)) newDialogue();
}

function requestOpen(id) {
  const c = conv(id);
  if (socket.send({ type: "dialogue.open", dialogue: wireId(id) })) {
    c.awaitingState = true;
    openStartedAt = performance.now();
    messagesEl.dataset.loading = "true";
  }
}

function showTitle() {
  const dialogue = current ? sidebar.get(current) : null;
  const title = current ? (dialogue ? dialogueTitle(dialogue) : firstPaintTitle(current) || dialogueTitle(null)) : _("New dialogue");
  titleEl.textContent = title;
  document.title = `${title} · chatsite`;
  messagesEl.dataset.dialogueId = current || "";
}

function closeDrawer() {
  const drawer = window.bootstrap && window.bootstrap.Offcanvas.getInstance(document.getElementById("sidebar"));
  if (drawer) drawer.hide();
}

function renderPane() {
  views.clear();
  dirty.clear();
  const c = conv(current);
  const fragment = document.createDocumentFragment();
  for (const m of c.messages) fragment.appendChild(viewFor(m).el);
  listEl.replaceChildren(fragment);
  emptyEl.classList.toggle("d-none", c.messages.length > 0);
  refreshComposer();
  refreshActions();
  scrollToBottom();
}

function viewFor(m) {
  let view = views.get(msgKey(m));
  if (!view) {
    view = new MessageView(m);
    views.set(msgKey(m), view);
    if (m.role === "assistant") sizes.observe(view.el);
    if (m.status === "streaming") markDirty(m);
  }
  return view;
}

// A reply taller than the pane offers "scroll to its start"; when the pane itself
// shrinks (an alert above the composer, the keyboard on a phone) the newest text
// stays in view if it was.
const sizes = new ResizeObserver((entries) => {
  const pane = messagesEl.clientHeight;
  for (const entry of entries) {
    if (entry.target === messagesEl) {
      if (follow) scrollToBottom();
      for (const view of views.values()) markLong(view.el, pane);
    } else {
      markLong(entry.target, pane);
    }
  }
});
sizes.observe(messagesEl);

// A data attribute, not a class: MessageView.update() rewrites the class list.
function markLong(article, pane) {
  if (article.classList.contains("msg-assistant")) article.toggleAttribute("data-long", article.offsetHeight > pane);
}

/** Show a stored or changed message of the open dialogue. */
function showMessage(m, { pendingKey } = {}) {
  let view = pendingKey ? views.get(pendingKey) : null;
  if (view) {
    views.delete(pendingKey);
    views.set(msgKey(m), view);
  } else {
    view = views.get(msgKey(m));
  }
  if (view) {
    view.update(m);
    if (m.status !== "streaming") m.renderedSeq = m.seq;
  } else {
    view = viewFor(m);
    listEl.appendChild(view.el);
  }
  if (m.status === "streaming") markDirty(m);
  emptyEl.classList.add("d-none");
  refreshComposer();
  refreshActions();
  if (follow) scrollToBottom();
}

function markDirty(m) {
  dirty.add(m);
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(paintFrame);
  }
}

function paintFrame() {
  frameRequested = false;
  for (const m of dirty) {
    const view = views.get(msgKey(m));
    if (!view) continue;
    view.paint(m);
    m.renderedSeq = m.seq; // what the user sees ends at this delta
  }
  dirty.clear();
  if (follow) scrollToBottom();
}

function scrollToBottom() {
  messagesEl.scrollTop = messagesEl.scrollHeight;
}

function streamingMessage(c) {
  for (let i = c.messages.length - 1; i >= 0; i -= 1) {
    if (c.messages[i].status === "streaming") return c.messages[i];
  }
  return null;
}

function refreshComposer() {
  const streaming = !!streamingMessage(conv(current));
  stopButton.classList.toggle("d-none", !streaming);
  sendButton.classList.toggle("d-none", streaming);
}

/** Retry, regenerate and edit belong to the last turn only. */
function refreshActions() {
  const c = conv(current);
  const visible = c.messages.filter((m) => !m.replaced);
  const streaming = visible.some((m) => m.status === "streaming");
  let lastUser = null;
  let lastReply = null;
  for (const m of visible) {
    if (m.role === "user") {
      lastUser = m;
      lastReply = null;
    } else {
      lastReply = m;
    }
  }
  for (const m of c.messages) {
    const view = views.get(msgKey(m));
    if (!view) continue;
    const isReply = m === lastReply && !streaming;
    view.setActions({
      // the model can go on from where a cut-off, failed or stopped reply ended
      resume:
        isReply &&
        !!m.content &&
        (m.cut_off || m.status === "failed" || m.status === "stopped" || m.status === "interrupted"),
      retry: isReply && (m.status === "failed" || m.status === "interrupted"),
      regenerate: isReply && (m.status === "complete" || m.status === "stopped"),
      edit: m === lastUser && !streaming && !m.pending && m.id != null,
    });
  }
}

// --- Frames from the server ------------------------------------------------------------

const handlers = {
  "dialogue.created"({ dialogue }) {
    sidebar.upsert(dialogue);
    const id = key(dialogue.id);
    const fresh = conv(id);
    fresh.loaded = true;
    // Sends made in the "new dialogue" pane belong to this one now.
    const waiting = outbox.entries.filter((e) => e.dialogue === null);
    if (waiting.length && convs.has(NEW)) {
      const pending = convs.get(NEW);
      for (const m of pending.messages) upsertMessage(fresh, { ...m, dialogue: dialogue.id });
      convs.delete(NEW);
      for (const entry of waiting.slice(1)) {
        entry.dialogue = dialogue.id;
        delete entry.afterNew;
        socket.send(frameOf(entry));
      }
      outbox.write();
      if (current === null) {
        current = id;
        showInUrl(id, { replace: true });
        sidebar.setActive(id);
        showTitle();
        renderPane();
      }
    }
  },

  "dialogue.state"(frame) {
    const id = key(frame.dialogue.id);
    sidebar.upsert(frame.dialogue);
    const c = conv(id);
    c.messages = frame.messages.map((m) => ({ ...m, renderedSeq: 0 }));
    c.hasMore = frame.has_more;
    c.loaded = true;
    c.awaitingState = false;
    // A queued send this dialogue already stored was delivered; the rest still wait.
    for (const entry of outbox.forDialogue(frame.dialogue.id)) {
      if (c.messages.some((m) => m.client_id === entry.client_id)) outbox.remove(entry.client_id);
      else c.messages.push(pendingMessage(entry));
    }
    if (id !== current) return;
    showTitle();
    renderPane();
    const started = openStartedAt;
    openStartedAt = null;
    requestAnimationFrame(() => {
      if (started !== null) messagesEl.dataset.openMs = String(Math.round(performance.now() - started));
      messagesEl.dataset.loading = "false";
    });
  },

  "dialogue.history"(frame) {
    const c = conv(frame.dialogue.id ?? frame.dialogue);
    c.loadingHistory = false;
    c.hasMore = frame.has_more;
    document.getElementById("history-loader").classList.add("d-none");
    const older = frame.messages.filter((m) => !findMessage(c, m)).map((m) => ({ ...m, renderedSeq: m.seq }));
    c.messages = older.concat(c.messages);
    if (key(frame.dialogue.id ?? frame.dialogue) !== current || !older.length) return;
    const before = messagesEl.scrollHeight;
    const fragment = document.createDocumentFragment();
    for (const m of older) fragment.appendChild(viewFor(m).el);
    listEl.prepend(fragment);
    messagesEl.scrollTop += messagesEl.scrollHeight - before;
    refreshActions();
  },

  "dialogue.updated"({ dialogue }) {
    sidebar.upsert(dialogue);
    if (key(dialogue.id) === current) showTitle();
  },

  "dialogue.deleted"(frame) {
    forgetDialogue(frame.dialogue && frame.dialogue.id != null ? frame.dialogue.id : frame.dialogue);
  },

  "message.created"({ message }) {
    const c = conv(message.dialogue);
    const entry = message.client_id ? outbox.remove(message.client_id) : null;
    const pendingKey = message.client_id ? `c:${message.client_id}` : null;
    if (message.parent !== undefined) followBranch(c, message);
    else if (entry && entry.type === "message.edit") markEdited(c, message);
    const m = upsertMessage(c, message);
    sidebar.touch(message.dialogue, message.created_at);
    if (key(message.dialogue) === current) {
      if (entry && entry.type === "message.edit") renderPane();
      else showMessage(m, { pendingKey });
    }
  },

  "reply.started"(frame) {
    const c = conv(frame.dialogue);
    if (frame.message.parent === undefined) markRegenerated(c, frame.message);
    else followBranch(c, frame.message);
    onMessage(frame);
  },
  "reply.completed"(frame) {
    onMessage(frame);
    if (key(frame.dialogue) === current) announce(_("The reply is complete."));
  },
  "reply.stopped": (frame) => onMessage(frame),
  "reply.failed"(frame) {
    onMessage(frame);
    if (key(frame.dialogue) === current) announce(_("The reply failed."));
  },
  "image.started": (frame) => onMessage(frame),
  "image.completed"(frame) {
    onMessage(frame);
    if (key(frame.dialogue) === current) announce(_("The image is ready."));
  },
  "image.failed": (frame) => onMessage(frame),

  "reply.delta"(frame) {
    const c = convs.get(key(frame.dialogue));
    if (!c || !c.loaded) return;
    const m = c.messages.find((x) => x.id === frame.message_id);
    if (!m) {
      gap(frame.dialogue, c);
      return;
    }
    if (m.stopping || frame.seq <= (m.seq || 0)) return; // already in the text
    if (frame.seq !== (m.seq || 0) + 1) {
      gap(frame.dialogue, c);
      return;
    }
    m.content += frame.delta;
    m.seq = frame.seq;
    if (key(frame.dialogue) === current) markDirty(m);
  },

  error(frame) {
    const entry = frame.ref ? outbox.remove(frame.ref) : null;
    if (entry) {
      // The send was refused: take it off the screen and give the text back.
      const c = conv(entry.dialogue);
      c.messages = c.messages.filter((m) => m.client_id !== entry.client_id || m.role !== "user");
      if (key(entry.dialogue) === current || (entry.dialogue === null && current === null)) {
        const view = views.get(`c:${entry.client_id}`);
        if (view) view.el.remove();
        views.delete(`c:${entry.client_id}`);
        if (!input.value.trim() && attachments.isEmpty) {
          input.value = entry.content;
          autosize();
          const carried = editingAttachmentIds(entry);
          const files = entry.attachments || [];
          if (entry.type === "message.edit") setEditing(entry.edits, files.filter((a) => carried.has(a.id)));
          attachments.restore(files.filter((a) => !carried.has(a.id)));
        }
        emptyEl.classList.toggle("d-none", c.messages.length > 0);
        refreshActions(); // the last turn is the one before the refused send again
      }
    }
    if (frame.ref === "dialogue.open" && frame.code === "not_found") {
      if (current) forgetDialogue(current);
    }
    if (frame.ref === "branch.switch") messagesEl.dataset.loading = "false";
    if (frame.ref === "reply.stop") {
      for (const m of conv(current).messages) delete m.stopping;
    }
    showFrameError(frame);
  },

  pong() {},
};

function onMessage({ dialogue, message }) {
  const c = conv(dialogue);
  const m = upsertMessage(c, message);
  if (m.status !== "streaming") delete m.stopping;
  sidebar.touch(dialogue, message.created_at);
  if (key(dialogue) === current) showMessage(m);
}

/** A new message continues the branch after its parent: what the shown branch had
 * after the parent leaves it (an edit or a regenerate), and the new message counts
 * the one it replaces among its siblings. */
function followBranch(c, message) {
  if (c.messages.some((m) => m.id === message.id)) return false; // already placed
  const visible = c.messages.filter((m) => !m.replaced && m.id != null);
  const at = message.parent == null ? -1 : visible.findIndex((m) => m.id === message.parent);
  if (message.parent != null && at < 0) return false; // its parent is not loaded here
  const leaving = visible.slice(at + 1);
  const previous = leaving.find((m) => (m.parent ?? null) === (message.parent ?? null));
  message.siblings = previous ? [...(previous.siblings || [previous.id]), message.id] : [message.id];
  for (const m of leaving) {
    m.replaced = true;
    const view = key(message.dialogue) === current ? views.get(msgKey(m)) : null;
    if (view) view.update(m);
  }
  return leaving.length > 0;
}

/** A regenerated reply replaces the previous answer to the same user message. */
function markRegenerated(c, message) {
  if (findMessage(c, message)) return;
  const visible = c.messages.filter((m) => !m.replaced);
  const last = visible[visible.length - 1];
  if (last && last.role === "assistant" && last.status !== "streaming") {
    last.replaced = true;
    const view = views.get(msgKey(last));
    if (view && key(message.dialogue) === current) view.update(last);
  }
}

/** An edit replaces the last user message and its reply. */
function markEdited(c, message) {
  const visible = c.messages.filter((m) => !m.replaced && m.client_id !== message.client_id);
  for (let i = visible.length - 1; i >= 0; i -= 1) {
    visible[i].replaced = true;
    if (visible[i].role === "user") break;
  }
}

function gap(dialogue, c) {
  if (c.awaitingState) return;
  if (key(dialogue) === current) requestOpen(dialogue);
  else c.loaded = false; // re-opened when shown again
}

function announce(text) {
  announcer.textContent = "";
  setTimeout(() => {
    announcer.textContent = text;
  }, 50);
}

// --- Sending ------------------------------------------------------------------------------

function frameOf(entry) {
  const frame = { type: entry.type, dialogue: entry.dialogue, content: entry.content, client_id: entry.client_id };
  if (entry.model) frame.model = entry.model;
  if (entry.attachments && entry.attachments.length) frame.attachments = entry.attachments.map((a) => a.id);
  return frame;
}

function pendingMessage(entry) {
  return {
    id: null,
    dialogue: entry.dialogue,
    role: "user",
    content: entry.content,
    status: "complete",
    client_id: entry.client_id,
    created_at: entry.created_at,
    images: [],
    attachments: entry.attachments || [],
    pending: socket.isOpen ? "sent" : "queued",
  };
}

function send(content, files = []) {
  const c = conv(current);
  if (streamingMessage(c)) {
    showAlert("warning", _("A reply is still being written. Stop it or wait for it to finish."));
    return false;
  }
  const entry = {
    type: editing ? "message.edit" : "message.send",
    dialogue: current ? wireId(current) : null,
    content,
    client_id: newClientId(),
    created_at: new Date().toISOString(),
  };
  if (editing) entry.edits = editing;
  const carried = editing ? [...editingAttachments, ...files] : files;
  if (carried.length) entry.attachments = carried;
  if (!current) {
    const model = settings.draftModel();
    if (model) entry.model = model;
    // Only the first send may create the dialogue; later ones wait for its id.
    if (outbox.entries.some((e) => e.dialogue === null)) entry.afterNew = true;
  }
  outbox.add(entry);
  const m = pendingMessage(entry);
  c.messages.push(m);
  follow = true;
  showMessage(m);
  setEditing(null);
  if (!entry.afterNew) socket.send(frameOf(entry));
  return true;
}

function flushOutbox() {
  for (const entry of outbox.entries) {
    if (!entry.afterNew) socket.send(frameOf(entry));
  }
  for (const view of views.values()) {
    if (view.el.classList.contains("msg-queued")) view.el.classList.remove("msg-queued");
  }
  for (const m of conv(current).messages) {
    if (m.pending === "queued") {
      m.pending = "sent";
      const view = views.get(msgKey(m));
      if (view) view.update(m);
    }
  }
}

function stopReply() {
  const m = streamingMessage(conv(current));
  if (!m || m.stopping) return;
  // The saved text ends exactly where the screen does.
  if (socket.send({ type: "reply.stop", dialogue: wireId(current), seq: m.renderedSeq || 0 })) {
    m.stopping = true;
  } else {
    showAlert("warning", _("You are offline; the reply cannot be stopped until the connection is back."));
  }
}

function regenerate() {
  if (!current) return;
  if (!socket.send({ type: "reply.regenerate", dialogue: wireId(current) })) {
    showAlert("warning", _("You are offline. Try again when the connection is back."));
  }
}

function resumeReply() {
  if (!current) return;
  if (!socket.send({ type: "reply.continue", dialogue: wireId(current) })) {
    showAlert("warning", _("You are offline. Try again when the connection is back."));
  }
}

function setEditing(messageId, files = []) {
  editing = messageId;
  editingAttachments = messageId ? files : [];
  document.getElementById("composer-editing").classList.toggle("d-none", !messageId);
}

// --- Alerts --------------------------------------------------------------------------

function showAlert(kind, text, { countdown = 0, id = null } = {}) {
  if (id) {
    const old = alertsEl.querySelector(`[data-alert-id="${id}"]`);
    if (old) old.remove();
  }
  const el = document.getElementById("tpl-alert").content.firstElementChild.cloneNode(true);
  el.classList.add(`alert-${kind}`);
  if (id) el.dataset.alertId = id;
  const textEl = el.querySelector(".alert-text");
  textEl.textContent = text;
  alertsEl.appendChild(el);
  if (countdown > 0) {
    let left = Math.ceil(countdown);
    const tick = () => {
      textEl.textContent = text.replace("{seconds}", String(left));
      if (left <= 0) {
        clearInterval(timer);
        el.remove();
      }
      left -= 1;
    };
    const timer = setInterval(tick, 1000);
    tick();
  }
  return el;
}

/** The server's words when they are in the page's language (English, or translated
 * by the server), else the page's own translated text for the same refusal. */
function serverText(message, fallback) {
  const english = (document.documentElement.lang || "en").startsWith("en");
  return message && (english || /[^\x00-\x7f]/.test(message)) ? message : fallback;
}

function showFrameError(frame) {
  const code = frame.code;
  if (code === "rate_limited") {
    showAlert("warning", _("Too many messages. Try again in {seconds} s."), {
      countdown: frame.retry_after || 10,
      id: "rate",
    });
  } else if (code === "quota_exceeded") {
    const el = showAlert("warning", serverText(frame.message, _("You have reached your daily quota.")), { id: "quota" });
    import("./api.js")
      .then(({ api }) => api("GET", "/api/usage/"))
      .then((usage) => {
        el.querySelector(".alert-text").textContent = fmt(_("You have reached your daily quota. It resets at %(time)s."),
          { time: longTime(usage.reset_at) },
        );
      })
      .catch(() => {});
  } else if (code === "busy") {
    showAlert("warning", _("A reply is still being written in this dialogue."), { id: "busy" });
  } else if (code === "too_long") {
    showAlert("warning", serverText(frame.message, _("The message is too long.")), { id: "too_long" });
  } else if (code === "not_found") {
    showAlert("warning", _("This dialogue does not exist or was deleted."), { id: "not_found" });
  } else if (code === "unavailable") {
    showAlert("danger", serverText(frame.message, _("The model is unavailable right now. Try again later.")), {
      id: "unavailable",
    });
  } else {
    showAlert("danger", frame.message || _("Something went wrong."), { id: code });
  }
}

function showError(err) {
  const text = err instanceof ApiError ? err.message : _("The server could not be reached.");
  showAlert("danger", text);
}

// --- Connection ----------------------------------------------------------------------

let offlineTimer = null;
function showConnection(state) {
  connEl.dataset.state = state;
  const label = connEl.querySelector(".conn-label");
  clearInterval(offlineTimer);
  if (state === "open") label.textContent = _("Online");
  else if (state === "connecting") label.textContent = _("Connecting…");
  else {
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((socket.nextRetryAt - Date.now()) / 1000));
      label.textContent = fmt(_("Offline, retrying in %(seconds)s s"), { seconds });
    };
    tick();
    offlineTimer = setInterval(tick, 1000);
  }
}

socket.addEventListener("state", (e) => showConnection(e.detail));
socket.addEventListener("open", () => {
  // Everything not on screen may have moved on while we were away.
  for (const [k, c] of convs) if (k !== current && k !== NEW) c.loaded = false;
  if (current) requestOpen(current);
  flushOutbox();
});
socket.addEventListener("frame", (e) => {
  const handler = handlers[e.detail.type];
  if (handler) handler(e.detail);
});

// --- DOM events -------------------------------------------------------------------------

function autosize() {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
}

input.addEventListener("input", autosize);
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    composer.requestSubmit();
  }
});
composer.addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!input.value.trim() && attachments.isEmpty && !editingAttachments.length) return;
  if (attachments.uploading) {
    // The message goes once every upload has finished.
    if (waitingForUploads) return;
    waitingForUploads = true;
    composer.dataset.waiting = "true";
    sendButton.disabled = true;
    announce(_("The message will be sent when the uploads finish."));
    await attachments.settled();
    waitingForUploads = false;
    delete composer.dataset.waiting;
    sendButton.disabled = false;
  }
  if (attachments.failed.length) {
    showAlert("warning", _("A file could not be uploaded (the reason is on it). Remove it, then send again."), {
      id: "upload",
    });
    return;
  }
  const content = input.value.trim();
  const files = attachments.done();
  if (!content && !files.length && !editingAttachments.length) return;
  if (send(content, files)) {
    input.value = "";
    autosize();
    attachments.clear();
  }
});

// --- Attachments ------------------------------------------------------------------------

const attachments = new Attachments({
  root,
  box: filesEl,
  onChange: ({ alert }) => {
    if (alert) showAlert("warning", alert, { id: "files" });
  },
});

/** Ids of the files an edit carries over from the edited message. */
function editingAttachmentIds(entry) {
  if (entry.type !== "message.edit") return new Set();
  const edited = conv(entry.dialogue).messages.find((m) => m.id === entry.edits);
  return new Set(((edited && edited.attachments) || []).map((a) => a.id));
}

document.getElementById("attach-button").addEventListener("click", () => fileInput.click());
fileInput.addEventListener("change", () => {
  attachments.add([...fileInput.files]);
  fileInput.value = "";
  input.focus();
});
filesEl.addEventListener("click", (e) => {
  const button = e.target.closest("[data-action=remove-file]");
  if (!button) return;
  attachments.remove(button.closest(".file-chip").dataset.key);
  input.focus();
});
input.addEventListener("paste", (e) => {
  const files = [...((e.clipboardData && e.clipboardData.files) || [])];
  if (!files.length) return;
  // A copied picture often comes with its text or HTML; the text still pastes.
  if (!e.clipboardData.types.includes("text/plain")) e.preventDefault();
  attachments.add(files);
});
const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
document.addEventListener("dragover", (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  e.dataTransfer.dropEffect = "copy";
  document.body.classList.add("drop-active");
});
document.addEventListener("dragleave", (e) => {
  if (e.relatedTarget === null) document.body.classList.remove("drop-active");
});
document.addEventListener("drop", (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  document.body.classList.remove("drop-active");
  attachments.add([...e.dataTransfer.files]);
});
stopButton.addEventListener("click", () => stopReply());
document.getElementById("cancel-edit").addEventListener("click", () => {
  setEditing(null);
  input.value = "";
  autosize();
});
document.getElementById("new-dialogue").addEventListener("click", () => newDialogue());

messagesEl.addEventListener("scroll", () => {
  const atBottom = messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 40;
  follow = atBottom;
  jumpButton.classList.toggle("d-none", atBottom);
  const c = conv(current);
  if (messagesEl.scrollTop < 80 && current && c.hasMore && !c.loadingHistory) {
    const first = c.messages.find((m) => m.id != null);
    if (first && socket.send({ type: "dialogue.history", dialogue: wireId(current), before: first.id })) {
      c.loadingHistory = true;
      document.getElementById("history-loader").classList.remove("d-none");
    }
  }
});
jumpButton.addEventListener("click", () => {
  follow = true;
  scrollToBottom();
  jumpButton.classList.add("d-none");
});

listEl.addEventListener("click", async (e) => {
  const button = e.target.closest("[data-action]");
  if (!button) return;
  const article = button.closest(".msg");
  const c = conv(current);
  const m = c.messages.find((x) => article && String(x.id) === article.dataset.id);
  const action = button.dataset.action;
  if (action === "copy-code") {
    await copyText(button.closest(".code-block").querySelector("pre").textContent, button);
  } else if (action === "copy-message" && m) {
    await copyRendered(article.querySelector(".msg-body"), button);
  } else if (action === "copy-markdown" && m) {
    await copyText(m.content, button);
  } else if ((action === "branch-prev" || action === "branch-next") && m) {
    switchBranch(m, action === "branch-next" ? 1 : -1);
  } else if (action === "scroll-start") {
    follow = false;
    messagesEl.scrollTo({ top: article.offsetTop - messagesEl.offsetTop - 8, behavior: "smooth" });
    article.tabIndex = -1; // keyboard users continue reading from there
    article.focus({ preventScroll: true });
  } else if (action === "retry" || action === "regenerate") {
    regenerate();
  } else if (action === "continue") {
    resumeReply();
  } else if (action === "report" && m) {
    reports.open(m);
  } else if (action === "edit" && m) {
    setEditing(m.id, m.attachments || []);
    input.value = m.content;
    autosize();
    input.focus();
  }
});

/** Show the previous or next sibling's branch, on this device and every other. */
function switchBranch(m, step) {
  const siblings = m.siblings || [];
  const target = siblings[siblings.indexOf(m.id) + step];
  if (target == null || streamingMessage(conv(current))) return;
  if (socket.send({ type: "branch.switch", dialogue: wireId(current), message: target })) {
    messagesEl.dataset.loading = "true";
  }
}

async function copyText(text, button, html = null) {
  try {
    if (html && window.ClipboardItem) {
      const item = { "text/plain": new Blob([text], { type: "text/plain" }) };
      item["text/html"] = new Blob([html], { type: "text/html" });
      await navigator.clipboard.write([new ClipboardItem(item)]);
    } else {
      await navigator.clipboard.writeText(text);
    }
    const label = button.textContent;
    button.textContent = _("Copied");
    setTimeout(() => {
      button.textContent = label;
    }, 1500);
  } catch (_e) {
    showAlert("warning", _("The browser did not allow copying."));
  }
}

/** The reply as it reads on screen: text (and HTML for rich editors), without the
 * code blocks' headers, math as its TeX source. */
async function copyRendered(body, button) {
  const clone = body.cloneNode(true);
  for (const head of clone.querySelectorAll(".code-head")) head.remove();
  for (const math of clone.querySelectorAll(".math-rendered")) {
    const tex = math.querySelector("annotation");
    const display = math.classList.contains("math-display");
    if (tex) math.replaceChildren(display ? `$$${tex.textContent}$$` : `$${tex.textContent}$`);
  }
  // innerText needs layout to put line breaks between blocks.
  const holder = document.createElement("div");
  holder.className = "visually-hidden";
  holder.appendChild(clone);
  document.body.appendChild(holder);
  const text = clone.innerText.trim();
  holder.remove();
  await copyText(text, button, clone.innerHTML);
}

function typing(target) {
  return target.closest("input, textarea, select, [contenteditable]") !== null;
}

document.addEventListener("keydown", (e) => {
  const mod = e.ctrlKey || e.metaKey;
  if (e.key === "Escape" && !document.querySelector(".modal.show, .offcanvas.show, .dropdown-menu.show")) {
    if (streamingMessage(conv(current))) {
      e.preventDefault();
      stopReply();
    }
  } else if (mod && !e.shiftKey && e.key.toLowerCase() === "k") {
    e.preventDefault();
    const drawer = document.getElementById("sidebar");
    if (window.matchMedia("(max-width: 767.98px)").matches) {
      window.bootstrap.Offcanvas.getOrCreateInstance(drawer).show();
    }
    document.getElementById("dialogue-search").focus();
  } else if (mod && e.shiftKey && e.key.toLowerCase() === "o") {
    e.preventDefault();
    newDialogue();
  } else if (e.key === "?" && !mod && !typing(e.target)) {
    e.preventDefault();
    window.bootstrap.Modal.getOrCreateInstance(document.getElementById("help-modal")).show();
  }
});

window.addEventListener("popstate", () => {
  const d = dialogueFromLocation();
  if (d) openDialogue(d, { replace: true });
  else newDialogue();
});

// --- Start ---------------------------------------------------------------------------

const reports = new ReportDialog();
new ShareDialog({ getDialogueId: () => current, onError: (err) => showError(err) });
new ImportDialog({
  onImported: async (ids) => {
    for (const id of ids) sidebar.upsert(await api("GET", `/api/dialogues/${id}/`));
  },
});
current = dialogueFromLocation(); // a string id, as key() makes them, or null
showInUrl(current, { replace: true });
showTitle();
for (const entry of outbox.entries) {
  // Sends queued before a reload show at once, marked until the server has them.
  if (entry.dialogue === null ? current === null : key(entry.dialogue) === current) {
    conv(current).messages.push({ ...pendingMessage(entry), pending: "queued" });
  }
}
// The server's transcript stays until dialogue.state replaces it; queued sends follow it.
if (showsFirstPaint(current)) for (const m of conv(current).messages) listEl.appendChild(viewFor(m).el);
else renderPane();
sidebar.setActive(current);
sidebar.loadMore().then(showTitle);
socket.connect();
input.focus();
