// One message on screen: an <article> cloned from #tpl-message and kept in sync with
// its protocol object. Assistant text goes through StreamRenderer; user text is
// shown as typed (plain text, never HTML).
import { renderMessageAttachments } from "./attachments.js";
import { _, longTime, shortTime } from "./i18n.js";
import { StreamRenderer } from "./markdown.js";
import { applyReportState } from "./report.js";

const STATE_LABELS = {
  streaming: () => _("Writing…"),
  stopped: () => _("Stopped"),
  failed: () => _("Failed"),
  interrupted: () => _("Interrupted"),
  pending: () => _("Queued"),
};

export class MessageView {
  constructor(message) {
    this.el = document.getElementById("tpl-message").content.firstElementChild.cloneNode(true);
    this.body = this.el.querySelector(".msg-body");
    this.renderer = null;
    this.imagesKey = "";
    this.update(message);
  }

  /** Sync with `message`; the body of a streaming reply is left to `paint()`. */
  update(message) {
    const el = this.el;
    const assistant = message.role === "assistant";
    el.className = `msg msg-${message.role}`;
    if (message.replaced) el.classList.add("d-none");
    el.dataset.status = message.pending ? "pending" : message.status;
    el.classList.toggle("msg-queued", message.pending === "queued");
    if (message.id != null) el.dataset.id = String(message.id);
    if (message.client_id) el.dataset.clientId = message.client_id;
    el.querySelector(".msg-role").textContent = assistant ? _("Assistant") : _("You");
    el.querySelector(".msg-model").textContent = assistant && message.model ? message.model : "";
    const time = el.querySelector(".msg-time");
    if (message.created_at) {
      time.dateTime = message.created_at;
      time.textContent = shortTime(message.created_at);
      time.title = longTime(message.created_at);
    }
    const stateKey = message.pending === "queued" ? "pending" : message.status;
    const badge = el.querySelector(".msg-state");
    const label = STATE_LABELS[stateKey];
    badge.classList.toggle("d-none", !label);
    badge.className = `msg-state badge badge-${stateKey}${label ? "" : " d-none"}`;
    badge.textContent = label ? label() : "";

    const error = el.querySelector(".msg-error");
    const errorText =
      message.error && message.error.message
        ? message.error.message
        : message.status === "interrupted"
          ? _("The reply was interrupted.")
          : "";
    error.textContent = errorText;
    error.classList.toggle("d-none", !errorText);
    // Cut off at the token limit: the text is kept and Continue is offered.
    const cut = el.querySelector(".msg-cut");
    if (cut) cut.classList.toggle("d-none", !(message.cut_off && message.status !== "streaming"));

    if (assistant) {
      if (!this.renderer) this.renderer = new StreamRenderer(this.body);
      if (message.status !== "streaming") this.paint(message);
    } else {
      this.body.textContent = message.content;
    }
    this.renderImages(message.images || []);
    this.renderAttachments(message.attachments || []);
    applyReportState(el, message);
    this.renderBranches(message);
  }

  /** `‹ 2 / 3 ›` on a message with siblings (edits or regenerations of it). */
  renderBranches(message) {
    const siblings = message.siblings || [];
    const box = this.el.querySelector(".msg-branches");
    const index = siblings.indexOf(message.id);
    const shown = siblings.length > 1 && index >= 0;
    box.classList.toggle("d-none", !shown);
    if (!shown) return;
    box.querySelector(".msg-branch-pos").textContent = `${index + 1} / ${siblings.length}`;
    box.querySelector(".msg-branch-prev").disabled = index === 0;
    box.querySelector(".msg-branch-next").disabled = index === siblings.length - 1;
  }

  /** Render the assistant text now (called at most once per animation frame). */
  paint(message) {
    this.renderer.update(message.content, { final: message.status !== "streaming" });
  }

  renderAttachments(attachments) {
    const key = attachments.map((a) => a.id).join("|");
    if (key === this.attachmentsKey) return;
    this.attachmentsKey = key;
    renderMessageAttachments(this.el.querySelector(".msg-attachments"), attachments);
  }

  renderImages(images) {
    const key = images.map((i) => `${i.id}:${i.status}:${i.url}`).join("|");
    if (key === this.imagesKey) return;
    this.imagesKey = key;
    const box = this.el.querySelector(".msg-images");
    box.replaceChildren();
    const tpl = document.getElementById("tpl-image");
    for (const image of images) {
      const figure = tpl.content.firstElementChild.cloneNode(true);
      const img = figure.querySelector("img");
      const link = figure.querySelector(".img-download");
      const caption = figure.querySelector(".img-caption");
      caption.textContent = image.revised_prompt || image.prompt || "";
      if (image.url && image.url.startsWith("/images/")) {
        img.src = image.url;
        img.alt = image.prompt || _("Generated image");
        if (image.width && image.height) {
          img.width = image.width;
          img.height = image.height;
        }
        link.href = `${image.url}?download=1`;
      } else {
        img.remove();
        link.remove();
        figure.classList.add("msg-image-pending");
        if (image.status === "failed") {
          caption.textContent = (image.error && image.error.message) || _("The image could not be made.");
        } else {
          caption.textContent = `${_("Drawing…")} ${caption.textContent}`;
        }
      }
      box.appendChild(figure);
    }
  }

  setActions({ retry = false, regenerate = false, edit = false, resume = false }) {
    this.el.querySelector(".msg-retry").classList.toggle("d-none", !retry);
    const more = this.el.querySelector(".msg-continue");
    if (more) more.classList.toggle("d-none", !resume);
    this.el.querySelector(".msg-regenerate").classList.toggle("d-none", !regenerate);
    this.el.querySelector(".msg-edit").classList.toggle("d-none", !edit);
  }
}
