// The open dialogue lives in the URL: /d/<id>/ (server-rendered first paint, see
// conversations.views.chat_dialogue), / for a new one. The old ?d=<id> still opens.
const PATH = /^\/d\/(\d+)\/$/;

export function dialogueUrl(id) {
  return id == null ? "/" : `/d/${encodeURIComponent(id)}/`;
}

/** The dialogue id (a string) the address bar names, or null. */
export function dialogueFromLocation() {
  const match = PATH.exec(location.pathname);
  if (match) return match[1];
  return new URLSearchParams(location.search).get("d");
}

/** Point the address bar at `id`; a reload or a shared link reopens the same dialogue. */
export function showInUrl(id, { replace = false } = {}) {
  const url = dialogueUrl(id);
  if (location.pathname + location.search !== url) {
    history[replace ? "replaceState" : "pushState"]({ d: id == null ? null : String(id) }, "", url);
  }
  // The language switch returns to where the user is now, not where the page began.
  for (const next of document.querySelectorAll(".language-form input[name=next]")) next.value = url;
}
