// "Import": upload chatsite exports or ChatGPT's conversations.json to /api/imports/
// with a progress bar (XMLHttpRequest: fetch reports no upload progress), then a
// summary per file of what was imported and what was skipped, and why.
import { _, fmt, ngettextFmt } from "./i18n.js";
import { setWidth } from "./settings.js";

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export class ImportDialog {
  constructor({ onImported }) {
    this.onImported = onImported; // (dialogue ids) => void
    this.modalEl = document.getElementById("import-modal");
    this.form = document.getElementById("import-form");
    this.input = document.getElementById("import-file");
    this.progress = document.getElementById("import-progress");
    this.bar = document.getElementById("import-bar");
    this.status = document.getElementById("import-status");
    this.summary = document.getElementById("import-summary");
    this.submit = document.getElementById("import-submit");
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.upload();
    });
    this.modalEl.addEventListener("show.bs.modal", () => this.reset());
  }

  reset() {
    this.form.reset();
    this.progress.classList.add("d-none");
    this.status.textContent = "";
    this.summary.replaceChildren();
    this.submit.disabled = false;
  }

  setProgress(percent) {
    this.progress.setAttribute("aria-valuenow", String(Math.round(percent)));
    setWidth(this.bar, percent);
  }

  upload() {
    const files = [...this.input.files];
    if (!files.length) {
      this.status.textContent = _("Choose a file to import.");
      return;
    }
    const body = new FormData();
    for (const file of files) body.append("file", file);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/imports/");
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      this.setProgress((e.loaded / e.total) * 100);
      this.status.textContent = fmt(_("Uploading… %(percent)s%"), { percent: Math.round((e.loaded / e.total) * 100) });
    });
    xhr.upload.addEventListener("load", () => {
      this.setProgress(100);
      this.status.textContent = _("Importing…");
    });
    xhr.addEventListener("load", () => this.done(xhr));
    xhr.addEventListener("error", () => this.fail(_("The upload failed. Check your connection and try again.")));
    this.submit.disabled = true;
    this.summary.replaceChildren();
    this.progress.classList.remove("d-none");
    this.setProgress(0);
    xhr.send(body);
  }

  fail(text) {
    this.submit.disabled = false;
    this.status.textContent = text;
  }

  done(xhr) {
    this.submit.disabled = false;
    let data = null;
    try {
      data = JSON.parse(xhr.responseText);
    } catch (_e) {
      data = null;
    }
    if (!data || !data.results) {
      const message = data && data.error ? data.error.message : fmt(_("The import failed (HTTP %(status)s)."), { status: xhr.status });
      this.fail(message);
      return;
    }
    this.status.textContent = _("Done.");
    const ids = [];
    for (const result of data.results) {
      this.summary.appendChild(this.fileSummary(result));
      for (const item of result.imported || []) ids.push(item.id);
    }
    if (ids.length) this.onImported(ids);
  }

  fileSummary(result) {
    const box = document.createElement("div");
    box.className = "import-file border rounded p-2 mb-2";
    box.dataset.ok = result.error ? "false" : "true";
    const head = document.createElement("div");
    head.className = "fw-semibold text-break";
    head.textContent = result.file;
    box.appendChild(head);
    if (result.error) {
      const error = document.createElement("div");
      error.className = "text-danger import-error";
      error.textContent = `${result.error} ${_("Nothing was imported from this file.")}`;
      box.appendChild(error);
      return box;
    }
    const line = document.createElement("div");
    line.className = "import-counts";
    line.textContent = [
      ngettextFmt("%(count)s dialogue imported", "%(count)s dialogues imported", result.imported.length, { count: result.imported.length }),
      ngettextFmt("%(count)s skipped", "%(count)s skipped", result.skipped.length, { count: result.skipped.length }),
    ].join(" · ");
    box.appendChild(line);
    const list = document.createElement("ul");
    list.className = "mb-0 ps-3";
    for (const item of result.imported) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = `/d/${item.id}/`;
      a.textContent = item.title || _("Untitled");
      li.append(a, ` (${ngettextFmt("%(count)s message", "%(count)s messages", item.messages, { count: item.messages })})`);
      list.appendChild(li);
    }
    for (const item of result.skipped) {
      const li = document.createElement("li");
      li.className = "text-body-secondary";
      li.textContent = fmt(_("Skipped “%(title)s”: %(reason)s"), { title: item.title || _("Untitled"), reason: item.reason });
      list.appendChild(li);
    }
    for (const item of result.skipped_messages || []) {
      const li = document.createElement("li");
      li.className = "text-body-secondary";
      li.textContent = fmt(_("Not imported: %(count)s %(reason)s"), { count: item.count, reason: item.reason });
      list.appendChild(li);
    }
    box.appendChild(list);
    return box;
  }
}
