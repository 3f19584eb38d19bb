// Applies the colour theme before first paint: the saved choice, else the system's.
(function () {
  "use strict";
  var saved = null;
  try { saved = localStorage.getItem("chat.theme"); } catch (e) { /* storage off */ }
  var dark = saved ? saved === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.setAttribute("data-bs-theme", dark ? "dark" : "light");
})();
