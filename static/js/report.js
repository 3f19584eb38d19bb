// "Report" on assistant replies: a dialog asking why, POST /api/messages/<id>/report/,
// a confirmation toast and a mark on the message. Reported ids are remembered in
// this browser so the mark survives a reload (the protocol's Message has no field).
import { ApiError, api } from "./api.js";
import { _ } from "./i18n.js";

const MAX_CHARS = 1000;
const STORE = "chat.reported";

function load() {
  try {
    return new Set(JSON.parse(localStorage.getItem(STORE) || "[]").map(String));
  } catch (_e) {
    return new Set();
  }
}

const reported = load();

function remember(id) {
  reported.add(String(id));
  try {
    localStorage.setItem(STORE, JSON.stringify([...reported].slice(-500)));
  } catch (_e) {
    /* storage off: the mark lasts until reload */
  }
}

/** Show or hide the Report button and the "reported" mark on a message's element. */
export function applyReportState(el, message) {
  const button = el.querySelector(".msg-report");
  if (!button) return;
  const can = message.role === "assistant" && message.id != null && message.status !== "streaming";
  const done = message.id != null && reported.has(String(message.id));
  button.classList.toggle("d-none", !can);
  button.disabled = done;
  button.title = done ? _("You reported this reply.") : _("Report this reply to the site's team");
  el.classList.toggle("msg-reported", done);
}

export function showToast(text, kind = "success") {
  const box = document.getElementById("toasts");
  const toast = document.getElementById("tpl-toast").content.firstElementChild.cloneNode(true);
  toast.classList.add(`text-bg-${kind}`);
  toast.querySelector(".toast-body").textContent = text;
  box.appendChild(toast);
  toast.addEventListener("hidden.bs.toast", () => toast.remove());
  window.bootstrap.Toast.getOrCreateInstance(toast, { delay: 5000 }).show();
}

export class ReportDialog {
  constructor() {
    this.modalEl = document.getElementById("report-modal");
    this.form = document.getElementById("report-form");
    this.reason = document.getElementById("report-reason");
    this.error = document.getElementById("report-error");
    this.count = document.getElementById("report-count");
    this.submit = document.getElementById("report-submit");
    this.messageId = null;
    this.reason.addEventListener("input", () => this.refreshCount());
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
    this.modalEl.addEventListener("shown.bs.modal", () => this.reason.focus());
  }

  open(message) {
    this.messageId = message.id;
    this.reason.value = "";
    this.setError("");
    this.refreshCount();
    this.submit.disabled = false;
    window.bootstrap.Modal.getOrCreateInstance(this.modalEl).show();
  }

  refreshCount() {
    this.count.textContent = `${this.reason.value.length} / ${MAX_CHARS}`;
  }

  setError(text) {
    this.error.textContent = text;
    this.reason.classList.toggle("is-invalid", !!text);
  }

  async send() {
    const reason = this.reason.value.trim();
    if (!reason) {
      this.setError(_("Say briefly what is wrong with this reply."));
      this.reason.focus();
      return;
    }
    if (reason.length > MAX_CHARS) {
      this.setError(_("The reason is too long."));
      return;
    }
    const id = this.messageId;
    this.submit.disabled = true;
    try {
      await api("POST", `/api/messages/${encodeURIComponent(id)}/report/`, { reason });
    } catch (err) {
      this.submit.disabled = false;
      this.setError(
        err instanceof ApiError && err.status === 404
          ? _("This reply no longer exists.")
          : err instanceof ApiError
            ? err.message
            : _("The server could not be reached."),
      );
      return;
    }
    remember(id);
    for (const el of document.querySelectorAll(`.msg[data-id="${CSS.escape(String(id))}"]`)) {
      applyReportState(el, { id, role: "assistant", status: el.dataset.status });
    }
    window.bootstrap.Modal.getOrCreateInstance(this.modalEl).hide();
    showToast(_("Thank you. The reply was reported and will be reviewed."));
  }
}
