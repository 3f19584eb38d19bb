// Math in replies: $…$, $$…$$, \(…\) and \[…\], drawn by KaTeX (static/vendor/katex).
// markdown-it rules turn math into placeholders holding the TeX as plain text, so
// Markdown never reads inside math and code (spans, fences, indented) never becomes
// math; the page's sanitiser sees only those placeholders. renderMath() then draws
// each one with KaTeX, which builds DOM nodes and sets their styles through the
// CSSOM (allowed by the page's strict `style-src 'self'`), and sanitises the result
// against an allow-list. The server (conversations/rendering.py) emits the same
// placeholders, so its first paint and the admin's transcripts are drawn here too.

const DISPLAY_OPEN = [
  ["$$", "$$"],
  ["\\[", "\\]"],
];

function escapeHtml(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** `$` closes math unless it follows a space or is followed by a digit ("$5 and $10"). */
function closingDollar(src, from, max) {
  for (let i = src.indexOf("$", from); i !== -1 && i < max; i = src.indexOf("$", i + 1)) {
    if (src[i - 1] === "\\") continue;
    if (/\s/.test(src[i - 1]) || /\d/.test(src[i + 1] || "")) continue;
    return i;
  }
  return -1;
}

function mathInline(state, silent) {
  const { src, pos, posMax } = state;
  let open;
  let close;
  let display = false;
  if (src.startsWith("$$", pos)) [open, close, display] = ["$$", "$$", true];
  else if (src[pos] === "$") [open, close] = ["$", "$"];
  else if (src.startsWith("\\(", pos)) [open, close] = ["\\(", "\\)"];
  else if (src.startsWith("\\[", pos)) [open, close, display] = ["\\[", "\\]", true];
  else return false;
  const start = pos + open.length;
  let end;
  if (open === "$") {
    if (start >= posMax || /\s/.test(src[start])) return false;
    end = closingDollar(src, start, posMax);
  } else {
    end = src.indexOf(close, start);
  }
  if (end === -1 || end + close.length > posMax) return false;
  const tex = src.slice(start, end);
  // A backtick inside means a code span overlaps: code wins, this is not math.
  if (!tex.trim() || tex.includes("`")) return false;
  if (!silent) {
    const token = state.push("math_inline", "span", 0);
    token.content = tex;
    token.meta = { display };
  }
  state.pos = end + close.length;
  return true;
}

function mathBlock(state, startLine, endLine, silent) {
  if (state.sCount[startLine] - state.blkIndent >= 4) return false; // indented code
  const first = state.src.slice(state.bMarks[startLine] + state.tShift[startLine], state.eMarks[startLine]);
  const pair = DISPLAY_OPEN.find(([open]) => first.startsWith(open));
  if (!pair) return false;
  const [open, close] = pair;
  const lines = [];
  let rest = first.slice(open.length);
  let line = startLine;
  // "$$x$$ and more" is inline math in a paragraph, not a display block.
  if (rest.includes(close) && !rest.trimEnd().endsWith(close)) return false;
  // Display math ends at its closing marker, at the latest before a blank line (so a
  // streaming reply's finished blocks never end inside it).
  for (;;) {
    const trimmed = rest.trimEnd();
    if (trimmed.endsWith(close) && (line > startLine || trimmed.length >= close.length)) {
      lines.push(trimmed.slice(0, trimmed.length - close.length));
      break;
    }
    lines.push(rest);
    line += 1;
    if (line >= endLine) return false;
    rest = state.src.slice(state.bMarks[line] + state.tShift[line], state.eMarks[line]);
    if (!rest.trim()) return false;
  }
  const tex = lines.join("\n");
  if (!tex.trim()) return false;
  if (silent) return true;
  const token = state.push("math_block", "div", 0);
  token.block = true;
  token.content = tex;
  token.map = [startLine, line + 1];
  state.line = line + 1;
  return true;
}

/** Teach a markdown-it instance the math syntax (placeholders only, no KaTeX yet). */
export function mathPlugin(md) {
  md.inline.ruler.before("escape", "math_inline", mathInline);
  md.block.ruler.before("fence", "math_block", mathBlock, { alt: ["paragraph", "reference", "blockquote", "list"] });
  md.renderer.rules.math_inline = (tokens, idx) => {
    const cls = tokens[idx].meta.display ? "math-tex math-display" : "math-tex";
    return `<span class="${cls}">${escapeHtml(tokens[idx].content)}</span>`;
  };
  md.renderer.rules.math_block = (tokens, idx) =>
    `<div class="math-tex math-display">${escapeHtml(tokens[idx].content)}</div>\n`;
}

// --- Drawing and sanitising -------------------------------------------------------

const KATEX_OPTIONS = {
  throwOnError: false, // bad TeX shows as red source text, never an exception
  trust: false, // no \href, \url, \includegraphics, \htmlClass...
  strict: "ignore",
  maxSize: 20,
  maxExpand: 500,
  output: "htmlAndMathml", // what shows, plus MathML for screen readers
};

const TAGS = new Set([
  "span", "svg", "path", "line",
  "math", "semantics", "annotation", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace",
  "msup", "msub", "msubsup", "mfrac", "msqrt", "mroot", "mover", "munder", "munderover",
  "mtable", "mtr", "mtd", "mstyle", "mpadded", "mphantom", "menclose", "mglyph",
]); // prettier-ignore
const ATTRIBUTES = new Set([
  "class", "aria-hidden", "style", "title", "xmlns", "encoding", "display",
  "mathvariant", "stretchy", "fence", "separator", "lspace", "rspace", "width", "height",
  "depth", "voffset", "accent", "accentunder", "columnalign", "columnlines", "rowlines",
  "columnspacing", "rowspacing", "displaystyle", "scriptlevel", "minsize", "maxsize",
  "movablelimits", "symmetric", "linethickness", "notation", "largeop",
  "viewbox", "preserveaspectratio", "d", "x1", "x2", "y1", "y2", "stroke-width",
]); // prettier-ignore
const BAD_STYLE = /url\(|image|expression|attr\(|var\(|fixed/i;

/** Remove whatever KaTeX should never have made: unknown elements and attributes,
 * and style values that could load or overlay anything. */
export function sanitizeMath(root) {
  for (const el of [...root.querySelectorAll("*")]) {
    if (!TAGS.has(el.localName.toLowerCase())) {
      el.remove();
      continue;
    }
    for (const attr of [...el.attributes]) {
      if (!ATTRIBUTES.has(attr.name.toLowerCase())) el.removeAttribute(attr.name);
    }
    const style = el.style;
    if (style) {
      for (const name of [...style]) {
        if (BAD_STYLE.test(style.getPropertyValue(name)) || BAD_STYLE.test(name)) style.removeProperty(name);
      }
    }
  }
  return root;
}

/** Draw every math placeholder under `root` (a fragment or an element) with KaTeX. */
export function renderMath(root) {
  const katex = window.katex;
  if (!katex) return;
  for (const el of root.querySelectorAll(".math-tex:not(.math-rendered)")) {
    const display = el.classList.contains("math-display");
    const out = document.createElement("span");
    try {
      katex.render(el.textContent, out, { ...KATEX_OPTIONS, displayMode: display });
    } catch (_e) {
      continue; // leave the TeX as text
    }
    el.replaceChildren(...sanitizeMath(out).childNodes);
    el.classList.add("math-rendered");
  }
}
