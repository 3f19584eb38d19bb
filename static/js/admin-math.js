// The admin's transcripts: draw the math placeholders the server rendered
// (conversations/rendering.py) with KaTeX, as the chat page does.
import { renderMath } from "./math.js";

renderMath(document.body);
