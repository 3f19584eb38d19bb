// "Share": read-only snapshot links of the open dialogue up to a chosen message
// (/api/dialogues/<id>/shares/), listed with copy and revoke. The link's page is
// rendered by the server (conversations/share_views.py); nothing here runs there.
import { api } from "./api.js";
import { _, fmt, longTime } from "./i18n.js";

const PREVIEW_CHARS = 60;

export class ShareDialog {
  constructor({ getDialogueId, onError }) {
    this.getDialogueId = getDialogueId; // () => id string of the open dialogue, or null
    this.onError = onError;
    this.modalEl = document.getElementById("share-modal");
    this.form = document.getElementById("share-form");
    this.upto = document.getElementById("share-upto");
    this.list = document.getElementById("share-list");
    this.none = document.getElementById("share-none");
    this.error = document.getElementById("share-error");
    this.create = document.getElementById("share-create");
    this.modalEl.addEventListener("show.bs.modal", () => this.refresh());
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.createLink();
    });
    this.list.addEventListener("click", (e) => this.onListClick(e));
  }

  /** The messages on screen, newest selected: a link can stop at any of them. */
  fillChoices() {
    this.upto.replaceChildren();
    const shown = document.querySelectorAll("#message-list .msg:not(.d-none)");
    for (const el of shown) {
      const id = el.dataset.id;
      if (!/^\d+$/.test(id || "") || el.dataset.status === "streaming") continue;
      const who = el.classList.contains("msg-user") ? _("You") : _("Assistant");
      const body = el.querySelector(".msg-body");
      let text = body ? body.innerText.replace(/\s+/g, " ").trim() : "";
      if (text.length > PREVIEW_CHARS) text = `${text.slice(0, PREVIEW_CHARS)}…`;
      const option = document.createElement("option");
      option.value = id;
      option.textContent = `${who}: ${text}`;
      this.upto.appendChild(option);
    }
    if (this.upto.options.length) this.upto.selectedIndex = this.upto.options.length - 1;
    const empty = !this.upto.options.length;
    this.upto.disabled = this.create.disabled = empty;
    this.error.textContent = empty ? _("Send a message first: there is nothing to share yet.") : "";
  }

  async refresh() {
    this.fillChoices();
    const id = this.getDialogueId();
    this.list.replaceChildren();
    this.none.classList.remove("d-none");
    if (!id) return;
    try {
      const data = await api("GET", `/api/dialogues/${id}/shares/`);
      this.render(data.results);
    } catch (err) {
      this.error.textContent = err.message;
    }
  }

  render(shares) {
    this.list.replaceChildren(...shares.map((s) => this.item(s)));
    this.none.classList.toggle("d-none", shares.length > 0);
  }

  item(share) {
    const li = document.createElement("li");
    li.className = "share-item d-flex gap-2 align-items-center mb-2";
    li.dataset.id = share.id;
    li.dataset.revoked = share.revoked_at ? "true" : "false";
    const url = new URL(share.url, location.origin).href;
    const input = document.createElement("input");
    input.className = "form-control form-control-sm share-url";
    input.readOnly = true;
    input.value = url;
    input.setAttribute("aria-label", _("Link"));
    const note = document.createElement("span");
    note.className = "small text-body-secondary text-nowrap";
    note.textContent = share.revoked_at
      ? _("revoked")
      : fmt(_("%(count)s messages · %(when)s"), { count: share.messages, when: longTime(share.created_at) });
    li.append(input, note);
    if (!share.revoked_at) {
      for (const [action, label, kind] of [
        ["copy", _("Copy"), "btn-outline-secondary"],
        ["revoke", _("Revoke"), "btn-outline-danger"],
      ]) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = `btn btn-sm ${kind} share-${action}`;
        button.dataset.action = action;
        button.textContent = label;
        li.appendChild(button);
      }
    } else {
      input.classList.add("text-decoration-line-through");
    }
    return li;
  }

  async createLink() {
    const id = this.getDialogueId();
    if (!id || !this.upto.value) return;
    this.create.disabled = true;
    this.error.textContent = "";
    try {
      await api("POST", `/api/dialogues/${id}/shares/`, { message: Number(this.upto.value) });
      await this.refresh();
      const first = this.list.querySelector(".share-url");
      if (first) first.select();
    } catch (err) {
      this.error.textContent = err.message;
    } finally {
      this.create.disabled = !this.upto.options.length;
    }
  }

  async onListClick(e) {
    const button = e.target.closest("button[data-action]");
    if (!button) return;
    const li = button.closest(".share-item");
    if (button.dataset.action === "copy") {
      const input = li.querySelector(".share-url");
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
        button.textContent = _("Copied");
      } catch (_e) {
        /* no clipboard permission: the text is selected for Ctrl+C */
      }
      return;
    }
    button.disabled = true;
    try {
      await api("DELETE", `/api/shares/${li.dataset.id}/`);
      await this.refresh();
    } catch (err) {
      this.error.textContent = err.message;
      button.disabled = false;
    }
  }
}
