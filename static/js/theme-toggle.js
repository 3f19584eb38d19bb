// Theme toggle (persisted), system changes followed while no choice is saved, and
// language forms that submit on change (no inline handlers: CSP script-src 'self').
(function () {
  "use strict";
  var root = document.documentElement;
  var media = window.matchMedia("(prefers-color-scheme: dark)");

  function apply(theme) {
    root.setAttribute("data-bs-theme", theme);
    var light = document.getElementById("hljs-light");
    var dark = document.getElementById("hljs-dark");
    if (light && dark) {
      light.disabled = theme === "dark";
      dark.disabled = theme !== "dark";
    }
  }
  function saved() {
    try { return localStorage.getItem("chat.theme"); } catch (e) { return null; }
  }
  apply(root.getAttribute("data-bs-theme") || "light");
  media.addEventListener("change", function (e) {
    if (!saved()) apply(e.matches ? "dark" : "light");
  });
  document.addEventListener("click", function (e) {
    var button = e.target.closest(".js-theme-toggle");
    if (!button) return;
    var next = root.getAttribute("data-bs-theme") === "dark" ? "light" : "dark";
    try { localStorage.setItem("chat.theme", next); } catch (err) { /* storage off */ }
    apply(next);
  });
  document.addEventListener("change", function (e) {
    if (e.target.matches && e.target.matches(".js-autosubmit")) e.target.form.submit();
  });
})();
