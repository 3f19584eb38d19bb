// Markdown to safe DOM: markdown-it (raw HTML off) then DOMPurify, rendered through
// an inert <template> so nothing loads before the sanitiser and our image rule ran;
// math placeholders are then drawn by KaTeX (math.js). StreamRenderer re-renders
// only the unfinished tail of a streaming reply.
import { _ } from "./i18n.js";
import { mathPlugin, renderMath } from "./math.js";

// Images may only come from this site's own image view; anything else (another
// host, protocol-relative, data:) is dropped so model output cannot send data away.
const OWN_IMAGE = /^\/images\/[\w-]+\/(\?[\w=&-]*)?$/;
const FENCE = /^ {0,3}(`{3,}|~{3,})/;

const md = window.markdownit({
  html: false,
  // A single newline is a line break, as in peers (a poem stays a poem); the
  // server's renderer (conversations/rendering.py) does the same.
  breaks: true,
  linkify: true,
  typographer: false,
  highlight(code, lang) {
    const hljs = window.hljs;
    if (lang && hljs && hljs.getLanguage(lang)) {
      try {
        return hljs.highlight(code, { language: lang, ignoreIllegals: true }).value;
      } catch (_e) {
        return "";
      }
    }
    return "";
  },
});
md.use(mathPlugin);

const PURIFY_CONFIG = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: [
    "script", "style", "iframe", "frame", "frameset", "object", "embed", "form",
    "input", "button", "textarea", "select", "option", "link", "meta", "base",
    "audio", "video", "source", "track", "svg", "math", "template", "dialog",
  ],
  FORBID_ATTR: ["style", "srcset", "action", "formaction", "ping", "background", "poster"],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
};

const purify = window.DOMPurify;
purify.addHook("uponSanitizeAttribute", (node, data) => {
  if (node.nodeName === "IMG" && data.attrName === "src" && !OWN_IMAGE.test(data.attrValue)) {
    data.keepAttr = false;
  }
  if (data.attrName.startsWith("on")) data.keepAttr = false;
});
purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  } else if (node.nodeName === "IMG") {
    node.setAttribute("loading", "lazy");
  }
});

export function sanitize(html) {
  return purify.sanitize(html, PURIFY_CONFIG);
}

/** Markdown source to a sanitised, decorated fragment (not yet in the document). */
export function renderMarkdown(source) {
  const template = document.createElement("template");
  template.innerHTML = sanitize(md.render(source));
  decorate(template.content);
  return template.content;
}

/** The label of a code block: the language its fence names, else "plain text". */
export function codeLanguage(code) {
  const lang = code && [...code.classList].find((c) => c.startsWith("language-"));
  return lang ? lang.slice(9) : _("plain text");
}

// A block streams with the same header it ends with, so nothing moves when it ends.
function decorate(fragment) {
  for (const img of fragment.querySelectorAll("img")) {
    if (!img.getAttribute("src")) img.remove();
  }
  const codeTemplate = document.getElementById("tpl-code");
  for (const pre of fragment.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    if (code) code.classList.add("hljs");
    if (!codeTemplate) continue;
    const block = codeTemplate.content.firstElementChild.cloneNode(true);
    block.querySelector(".code-lang").textContent = codeLanguage(code);
    pre.replaceWith(block);
    block.appendChild(pre);
  }
  renderMath(fragment);
}

/**
 * The end of the stable prefix of `text`, searching from `from` (a previous
 * boundary, outside any code fence): the start of the last complete line that begins
 * at column 0 after a blank line, outside a code fence. Blocks before it are final.
 */
export function stableBoundary(text, from) {
  let boundary = from;
  let fence = null; // the opening fence marker while inside a fenced block
  let prevBlank = false;
  let i = from;
  while (i < text.length) {
    const nl = text.indexOf("\n", i);
    if (nl === -1) break; // the last line is still being written
    const line = text.slice(i, nl);
    const blank = line.trim() === "";
    if (fence) {
      const m = line.match(FENCE);
      if (m && m[1][0] === fence[0] && m[1].length >= fence.length && line.trim() === m[1]) {
        fence = null;
      }
    } else {
      if (prevBlank && !blank && !/^[ \t]/.test(line)) boundary = i;
      const m = line.match(FENCE);
      if (m) fence = m[1];
    }
    prevBlank = blank && !fence;
    i = nl + 1;
  }
  return boundary;
}

// A long paragraph still being written would be re-parsed and re-laid out on every
// frame. Once its start is provably plain (no character that could pair with later
// text, and markdown-it renders it as nothing but a paragraph) that start is frozen
// into its own block, never touched again; only the rest of the paragraph changes.
// The price: a very long paragraph shows a line break every FREEZE_AFTER characters.
const FREEZE_AFTER = 1500;
const FREEZE_KEEP = 200;
const PAIRING = /[\\`*_[\]<>!&~|\n\r$]/;

function escapeHtml(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function startsPlain(text) {
  return /^[\p{L}\p{N}]/u.test(text) && !/^\d+[.)]/.test(text);
}

function isPlainParagraph(piece) {
  if (PAIRING.test(piece) || !startsPlain(piece)) return false;
  return md.render(piece) === `<p>${escapeHtml(piece.trim())}</p>\n`;
}

/** Renders a growing text: finished blocks once, the unfinished tail per frame. */
export class StreamRenderer {
  constructor(container) {
    this.container = container;
    this.reset();
  }

  reset() {
    this.stable = document.createElement("div");
    this.stable.className = "md-stable";
    this.tail = document.createElement("div");
    this.tail.className = "md-tail";
    this.frozen = document.createElement("div");
    this.frozen.className = "md-frozen";
    this.live = document.createElement("div");
    this.tail.append(this.frozen, this.live);
    this.container.replaceChildren(this.stable, this.tail);
    this.stableText = "";
    this.frozenText = ""; // the plain start of the tail's first paragraph
    this.liveText = null;
    this.text = "";
  }

  update(text, { final = false } = {}) {
    if (text === this.text && !final) return;
    if (!text.startsWith(this.stableText + this.frozenText)) this.reset();
    const from = this.stableText.length;
    const end = final ? text.length : stableBoundary(text, from);
    if (end > from) {
      // Finished blocks move to the stable part; a frozen start moves as it is.
      const rest = text.slice(from + this.frozenText.length, end);
      const fragment = renderMarkdown(rest);
      if (this.frozenText) this.joinParagraph(fragment);
      this.stable.append(...this.frozen.childNodes, fragment);
      this.live.replaceChildren();
      this.stableText = text.slice(0, end);
      this.frozenText = "";
      this.liveText = null;
    }
    const tail = text.slice(end);
    if (!final) this.freeze(tail);
    const liveText = tail.slice(this.frozenText.length);
    if (liveText !== this.liveText) {
      const fragment = renderMarkdown(liveText);
      if (this.frozenText) this.joinParagraph(fragment);
      this.live.replaceChildren(fragment);
      this.liveText = liveText;
    }
    this.text = text;
  }

  /** The first paragraph of `fragment` continues the frozen one: no gap between. */
  joinParagraph(fragment) {
    const first = fragment.firstElementChild;
    if (first && first.tagName === "P" && fragment.firstChild === first) first.classList.add("md-continued");
  }

  freeze(tail) {
    if (tail.length - this.frozenText.length < FREEZE_AFTER) return;
    if (this.frozenText === "" && !startsPlain(tail)) return;
    const region = tail.slice(this.frozenText.length, tail.length - FREEZE_KEEP);
    let cut = region.length;
    for (;;) {
      cut = region.lastIndexOf(" ", cut - 1);
      if (cut <= 0) return;
      if (startsPlain(region.slice(cut + 1, cut + 12))) break;
    }
    const piece = region.slice(0, cut + 1);
    if (!isPlainParagraph(piece)) return;
    const part = document.createElement("p");
    part.className = this.frozenText ? "md-part md-continued" : "md-part";
    part.textContent = piece;
    this.frozen.appendChild(part);
    this.frozenText += piece;
  }
}
