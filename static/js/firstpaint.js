// The server's first paint: /d/<id>/ arrives with the newest page of messages already
// rendered (conversations.views.chat_dialogue, sanitised like markdown.js does), so
// the transcript shows before the socket connects and without JavaScript. It stays
// until the socket's dialogue.state replaces the list in one DOM operation: no blank
// frame in between and never the same message twice.
import { renderMath } from "./math.js";

const listEl = document.getElementById("message-list");
const painted = listEl.dataset.firstPaint || null;
const paintedTitle = document.getElementById("dialogue-title").textContent;
if (painted !== null) {
  renderMath(listEl); // the server leaves math as TeX placeholders
  const pane = document.getElementById("messages");
  pane.scrollTop = pane.scrollHeight; // the newest message in view, as renderPane does
}

/** Whether the list on screen is the server's render of dialogue `id`, not yet replaced. */
export function showsFirstPaint(id) {
  return painted !== null && id === painted && listEl.querySelector(".msg[data-first-paint]") !== null;
}

/** The title the server rendered for dialogue `id`, until the sidebar knows it. */
export function firstPaintTitle(id) {
  return painted !== null && id === painted ? paintedTitle : null;
}
