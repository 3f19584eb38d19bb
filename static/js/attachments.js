// Files attached in the composer: each is uploaded at once (multipart, CSRF, with a
// progress bar) and shown as a chip; the message goes when every upload finished.
// Limits come from the page (data-attach-* on #chat-app); the server checks them
// again, with the file's content, and its refusal is shown on the chip.
import { _, fmt } from "./i18n.js";

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  if (match) return decodeURIComponent(match[1]);
  const input = document.querySelector("input[name=csrfmiddlewaretoken]");
  return input ? input.value : "";
}

export function humanSize(bytes) {
  if (bytes < 1024) return fmt(_("%(n)s bytes"), { n: bytes });
  const units = ["KB", "MB", "GB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

let counter = 0;

export class Attachments {
  constructor({ root, box, onChange }) {
    this.box = box;
    this.onChange = onChange || (() => {});
    this.maxFile = Number(root.dataset.attachMaxFile || 0);
    this.maxMessage = Number(root.dataset.attachMaxMessage || 0);
    this.maxCount = Number(root.dataset.attachMaxCount || 10);
    this.entries = [];
    this.waiters = [];
  }

  get uploading() {
    return this.entries.some((e) => e.state === "uploading");
  }

  get failed() {
    return this.entries.filter((e) => e.state === "failed");
  }

  get isEmpty() {
    return this.entries.length === 0;
  }

  /** The uploaded attachments (protocol objects), in the order they were added. */
  done() {
    return this.entries.filter((e) => e.state === "done").map((e) => e.attachment);
  }

  add(files) {
    for (const file of files) {
      if (this.entries.length >= this.maxCount) {
        this.onChange({ alert: fmt(_("A message may carry at most %(n)s files."), { n: this.maxCount }) });
        break;
      }
      const entry = { key: `f${(counter += 1)}`, name: file.name || _("Pasted file"), size: file.size, state: "uploading" };
      entry.preview = file.type && file.type.startsWith("image/") ? URL.createObjectURL(file) : null;
      this.entries.push(entry);
      this.render(entry);
      if (this.maxFile && file.size > this.maxFile) {
        this.fail(entry, fmt(_("The file is %(size)s; files of up to %(max)s are accepted."), {
          size: humanSize(file.size),
          max: humanSize(this.maxFile),
        }));
      } else {
        this.upload(entry, file);
      }
    }
    this.changed();
  }

  upload(entry, file) {
    const form = new FormData();
    form.append("file", file, entry.name);
    const xhr = new XMLHttpRequest();
    entry.xhr = xhr;
    xhr.open("POST", "/attachments/");
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) this.progress(entry, e.loaded / e.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (_e) {
        body = null;
      }
      if (xhr.status === 201 && body && body.attachment) {
        entry.state = "done";
        entry.attachment = body.attachment;
        this.progress(entry, 1);
        this.render(entry);
        this.changed();
      } else {
        const message = body && body.error && body.error.message;
        this.fail(entry, message || fmt(_("The upload failed (HTTP %(status)s)."), { status: xhr.status }));
      }
    });
    xhr.addEventListener("error", () => this.fail(entry, _("The upload failed: the server could not be reached.")));
    xhr.addEventListener("abort", () => {});
    xhr.send(form);
  }

  progress(entry, fraction) {
    entry.progress = fraction;
    const bar = entry.el && entry.el.querySelector(".file-progress");
    if (bar) bar.value = Math.round(fraction * 100);
  }

  fail(entry, message) {
    entry.state = "failed";
    entry.error = message;
    this.render(entry);
    this.changed();
  }

  /** Remove a chip; an upload in flight is cancelled, a finished one deleted. */
  remove(key) {
    const entry = this.entries.find((e) => e.key === key);
    if (!entry) return;
    this.entries = this.entries.filter((e) => e !== entry);
    if (entry.state === "uploading" && entry.xhr) entry.xhr.abort();
    if (entry.state === "done" && entry.attachment) {
      fetch(`/attachments/${entry.attachment.id}/`, {
        method: "DELETE",
        credentials: "same-origin",
        headers: { "X-CSRFToken": csrfToken() },
      }).catch(() => {});
    }
    this.forget(entry);
    this.changed();
  }

  /** The message went: chips go, the files stay (they belong to it now). */
  clear() {
    for (const entry of this.entries) this.forget(entry);
    this.entries = [];
    this.changed();
  }

  /** Put back the files of a refused send, as finished uploads. */
  restore(attachments) {
    for (const attachment of attachments || []) {
      if (this.entries.some((e) => e.attachment && e.attachment.id === attachment.id)) continue;
      const entry = { key: `f${(counter += 1)}`, name: attachment.name, size: attachment.size, state: "done", attachment, progress: 1 };
      this.entries.push(entry);
      this.render(entry);
    }
    this.changed();
  }

  /** Resolves once no upload is in flight. */
  settled() {
    if (!this.uploading) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  forget(entry) {
    if (entry.preview) URL.revokeObjectURL(entry.preview);
    if (entry.el) entry.el.remove();
  }

  changed() {
    this.box.classList.toggle("d-none", this.entries.length === 0);
    if (!this.uploading) {
      const waiters = this.waiters;
      this.waiters = [];
      for (const resolve of waiters) resolve();
    }
    this.onChange({});
  }

  render(entry) {
    if (!entry.el) {
      entry.el = document.getElementById("tpl-file-chip").content.firstElementChild.cloneNode(true);
      entry.el.dataset.key = entry.key;
      this.box.appendChild(entry.el);
    }
    const el = entry.el;
    el.dataset.state = entry.state;
    el.querySelector(".file-name").textContent = entry.name;
    el.querySelector(".file-name").title = entry.name;
    el.querySelector(".file-size").textContent = humanSize(entry.attachment ? entry.attachment.size : entry.size);
    const thumb = el.querySelector(".file-thumb");
    const picture = entry.attachment ? entry.attachment.kind === "image" : !!entry.preview;
    const src = entry.preview || (entry.attachment && entry.attachment.kind === "image" ? entry.attachment.url : "");
    thumb.classList.toggle("d-none", !picture || !src);
    if (picture && src && thumb.getAttribute("src") !== src) thumb.src = src;
    el.querySelector(".file-icon").classList.toggle("d-none", picture && !!src);
    const bar = el.querySelector(".file-progress");
    bar.classList.toggle("d-none", entry.state !== "uploading");
    bar.value = Math.round((entry.progress || 0) * 100);
    const error = el.querySelector(".file-error");
    error.textContent = entry.state === "failed" ? entry.error : "";
    error.classList.toggle("d-none", entry.state !== "failed");
    el.querySelector(".file-remove").setAttribute("aria-label", fmt(_("Remove %(name)s"), { name: entry.name }));
  }
}

/** The attachments of a message on screen: pictures as thumbnails, documents as links. */
export function renderMessageAttachments(box, attachments) {
  box.replaceChildren();
  const tpl = document.getElementById("tpl-attachment");
  for (const attachment of attachments || []) {
    if (!attachment.url || !attachment.url.startsWith("/attachments/")) continue;
    const link = tpl.content.firstElementChild.cloneNode(true);
    link.href = attachment.url;
    link.dataset.kind = attachment.kind;
    link.title = attachment.name;
    const img = link.querySelector("img");
    if (attachment.kind === "image") {
      img.src = attachment.url;
      img.alt = attachment.name;
      if (attachment.width && attachment.height) {
        img.width = attachment.width;
        img.height = attachment.height;
      }
      link.querySelector(".att-icon").remove();
    } else {
      img.remove();
    }
    link.querySelector(".att-name").textContent = attachment.name;
    link.querySelector(".att-size").textContent = humanSize(attachment.size);
    box.appendChild(link);
  }
}
