// Light or dark: the system's setting unless the user picks one in the header's theme select
// (remembered in localStorage). Loaded in <head> of every page so the theme is set before the first
// paint; pages listen for the "vh-theme" event to redraw their charts in the new colours.
"use strict";

(() => {
  const KEY = "vh-orch-theme";
  const root = document.documentElement;
  const stored = () => { try { return localStorage.getItem(KEY) || "system"; } catch (_) { return "system"; } };

  // "light" or "dark" pins the theme (data-theme on <html>, which app.css reads); "system" follows the OS.
  function apply(choice) {
    if (choice === "light" || choice === "dark") root.dataset.theme = choice; else delete root.dataset.theme;
  }

  apply(stored());
  document.addEventListener("DOMContentLoaded", () => {
    const select = document.getElementById("theme");
    if (!select) return;
    select.value = stored();
    select.addEventListener("change", () => {
      apply(select.value);
      try {
        if (select.value === "system") localStorage.removeItem(KEY); else localStorage.setItem(KEY, select.value);
      } catch (_) { /* storage refused (private mode): this page only */ }
      window.dispatchEvent(new Event("vh-theme"));
    });
  });
})();
