// Server-rendered transcripts (the admin, share links): draw the math placeholders
// (conversations/rendering.py) with KaTeX, as the chat page does.
import { renderMath } from "./math.js";

renderMath(document.body);
