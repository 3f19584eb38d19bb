// The dialogue list: pinned first, newest activity next, loaded page by page,
// searchable, with inline rename, pin, export and delete (after confirmation).
import { api } from "./api.js";
import { _ } from "./i18n.js";
import { dialogueUrl } from "./route.js";

export function dialogueTitle(dialogue) {
  return (dialogue && dialogue.title) || _("New dialogue");
}

function compare(a, b) {
  if (a.pinned !== b.pinned) return a.pinned ? -1 : 1;
  const ta = a.last_activity_at || a.updated_at || "";
  const tb = b.last_activity_at || b.updated_at || "";
  if (ta !== tb) return ta < tb ? 1 : -1;
  return String(b.id).localeCompare(String(a.id), undefined, { numeric: true });
}

export class Sidebar {
  constructor({ onSelect, onDeleted, onError }) {
    this.onSelect = onSelect;
    this.onDeleted = onDeleted;
    this.onError = onError;
    this.list = document.getElementById("dialogue-list");
    this.more = document.getElementById("dialogue-more");
    this.empty = document.getElementById("dialogue-empty");
    this.noMatch = document.getElementById("dialogue-no-match");
    this.search = document.getElementById("dialogue-search");
    this.template = document.getElementById("tpl-dialogue");
    this.dialogues = new Map(); // id -> dialogue, every one we know of
    this.items = new Map(); // id -> <li>
    this.activeId = null;
    this.cursor = null;
    this.loading = false;
    this.exhausted = false;
    this.query = "";
    this.searchTimer = null;
    this.pendingDelete = null;
    this.bind();
  }

  bind() {
    this.more.addEventListener("click", () => this.loadMore());
    const sentinel = document.getElementById("dialogue-sentinel");
    new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.loadMore();
    }).observe(sentinel);
    this.search.addEventListener("input", () => {
      clearTimeout(this.searchTimer);
      this.searchTimer = setTimeout(() => this.setQuery(this.search.value.trim()), 250);
    });
    this.search.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && this.search.value) {
        e.stopPropagation();
        this.search.value = "";
        this.setQuery("");
      }
    });
    this.list.addEventListener("click", (e) => this.onClick(e));
    this.list.addEventListener("dblclick", (e) => {
      const li = e.target.closest(".dlg-item");
      if (li && e.target.closest(".dlg-link")) this.startRename(li.dataset.id);
    });
    document.getElementById("delete-confirm").addEventListener("click", () => this.confirmDelete());
  }

  async setQuery(query) {
    if (query === this.query) return;
    this.query = query;
    this.cursor = null;
    this.exhausted = false;
    this.list.replaceChildren();
    this.items.clear();
    await this.loadMore();
  }

  async loadMore() {
    if (this.loading || this.exhausted) return;
    this.loading = true;
    const query = this.query;
    const params = new URLSearchParams();
    if (this.cursor) params.set("cursor", this.cursor);
    if (query) params.set("q", query);
    try {
      const page = await api("GET", `/api/dialogues/?${params}`);
      if (query !== this.query) return;
      for (const dialogue of page.results) this.upsert(dialogue, { snippet: dialogue.snippet, fromPage: true });
      this.cursor = page.next_cursor;
      this.exhausted = !page.next_cursor;
    } catch (err) {
      this.exhausted = true;
      this.onError(err);
    } finally {
      this.loading = false;
      this.more.classList.toggle("d-none", this.exhausted);
      this.showEmpty();
    }
  }

  /** Add or refresh a dialogue and move it to its place in the order. */
  upsert(dialogue, { snippet, fromPage = false } = {}) {
    const known = this.dialogues.get(String(dialogue.id));
    const merged = { ...known, ...dialogue };
    this.dialogues.set(String(dialogue.id), merged);
    if (this.query && !fromPage && !this.items.has(String(dialogue.id))) return merged;
    let li = this.items.get(String(dialogue.id));
    if (!li) {
      li = this.template.content.firstElementChild.cloneNode(true);
      li.dataset.id = String(dialogue.id);
      this.items.set(String(dialogue.id), li);
    }
    const link = li.querySelector(".dlg-link");
    link.href = dialogueUrl(dialogue.id);
    li.querySelector(".dlg-title").textContent = dialogueTitle(merged);
    li.querySelector(".dlg-menu-button").title = dialogueTitle(merged);
    li.querySelector('[data-action="export-md"]').href = `/api/dialogues/${dialogue.id}/export.md`;
    li.classList.toggle("pinned", !!merged.pinned);
    if (snippet !== undefined) li.querySelector(".dlg-snippet").textContent = snippet || "";
    this.markActive(li);
    this.place(li, merged, fromPage);
    this.showEmpty();
    return merged;
  }

  /** "No dialogues yet", or for a search "No dialogue matches". */
  showEmpty() {
    const none = this.items.size === 0;
    this.empty.classList.toggle("d-none", !none || !!this.query);
    this.noMatch.classList.toggle("d-none", !none || !this.query);
  }

  place(li, dialogue, fromPage) {
    // In search results the server's relevance order stands.
    if (this.query) {
      if (!li.parentNode) this.list.appendChild(li);
      return;
    }
    let before = null;
    for (const other of this.list.children) {
      if (other === li) continue;
      const od = this.dialogues.get(other.dataset.id);
      if (od && compare(dialogue, od) < 0) {
        before = other;
        break;
      }
    }
    // Past the loaded pages: leave it for a later page to bring.
    if (!before && !fromPage && !this.exhausted && li.parentNode !== this.list && this.list.children.length) {
      if (!dialogue.pinned && !this.isRecent(dialogue)) return;
    }
    if (li.nextSibling !== before || li.parentNode !== this.list) this.list.insertBefore(li, before);
  }

  isRecent(dialogue) {
    const last = this.list.lastElementChild;
    const ld = last && this.dialogues.get(last.dataset.id);
    return !ld || compare(dialogue, ld) <= 0;
  }

  /** A message or reply happened in a dialogue: it moves up. */
  touch(id, when) {
    const dialogue = this.dialogues.get(String(id));
    if (!dialogue) return;
    this.upsert({ ...dialogue, last_activity_at: when || new Date().toISOString() });
  }

  remove(id) {
    this.dialogues.delete(String(id));
    const li = this.items.get(String(id));
    if (li) li.remove();
    this.items.delete(String(id));
    this.showEmpty();
  }

  setActive(id) {
    this.activeId = id == null ? null : String(id);
    for (const li of this.items.values()) this.markActive(li);
  }

  markActive(li) {
    const active = li.dataset.id === this.activeId;
    li.classList.toggle("active", active);
    const link = li.querySelector(".dlg-link");
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }

  get(id) {
    return this.dialogues.get(String(id));
  }

  onClick(e) {
    const li = e.target.closest(".dlg-item");
    if (!li) return;
    const id = li.dataset.id;
    const action = e.target.closest("[data-action]");
    if (action) {
      const name = action.dataset.action;
      if (name === "export-md") return; // a plain download link
      e.preventDefault();
      if (name === "rename") this.startRename(id);
      else if (name === "pin") this.togglePin(id);
      else if (name === "delete") this.askDelete(id);
      return;
    }
    if (e.target.closest(".dlg-link") && !e.target.closest(".dlg-rename")) {
      if (e.metaKey || e.ctrlKey || e.shiftKey || e.button === 1) return;
      e.preventDefault();
      this.onSelect(id);
    }
  }

  startRename(id) {
    const li = this.items.get(String(id));
    if (!li || li.querySelector(".dlg-rename")) return;
    const dialogue = this.get(id);
    const title = li.querySelector(".dlg-title");
    const input = document.createElement("input");
    input.type = "text";
    input.className = "form-control form-control-sm dlg-rename";
    input.maxLength = 200;
    input.value = dialogue.title || "";
    input.setAttribute("aria-label", _("New title"));
    title.classList.add("d-none");
    li.querySelector(".dlg-link").after(input);
    input.focus();
    input.select();
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const value = input.value.trim();
      input.remove();
      title.classList.remove("d-none");
      if (!save || !value || value === dialogue.title) return;
      try {
        this.upsert(await api("PATCH", `/api/dialogues/${id}/`, { title: value }));
      } catch (err) {
        this.onError(err);
      }
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        finish(true);
      } else if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
  }

  async togglePin(id) {
    const dialogue = this.get(id);
    try {
      this.upsert(await api("PATCH", `/api/dialogues/${id}/`, { pinned: !dialogue.pinned }));
    } catch (err) {
      this.onError(err);
    }
  }

  askDelete(id) {
    this.pendingDelete = id;
    document.getElementById("delete-title").textContent = dialogueTitle(this.get(id));
    window.bootstrap.Modal.getOrCreateInstance(document.getElementById("delete-modal")).show();
  }

  async confirmDelete() {
    const id = this.pendingDelete;
    this.pendingDelete = null;
    window.bootstrap.Modal.getOrCreateInstance(document.getElementById("delete-modal")).hide();
    if (id == null) return;
    try {
      await api("DELETE", `/api/dialogues/${id}/`);
      this.remove(id);
      this.onDeleted(id);
    } catch (err) {
      this.onError(err);
    }
  }
}
