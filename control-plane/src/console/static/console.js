// Epochgate console: a little plain JavaScript on server-rendered pages. Everything
// works without it (the Logout All dialog is also a page); this only makes it nicer.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // "Logout All Users" opens its dialog instead of following the link.
  for (const opener of document.querySelectorAll("[data-dialog]")) {
    const dialog = document.getElementById(opener.dataset.dialog);
    if (!dialog || typeof dialog.showModal !== "function") continue;
    opener.addEventListener("click", (event) => {
      event.preventDefault();
      dialog.showModal();
      const first = dialog.querySelector("textarea, input:not([type=hidden])");
      if (first) first.focus();
    });
  }
  for (const closer of document.querySelectorAll("dialog [data-close]")) {
    closer.addEventListener("click", () => closer.closest("dialog").close());
  }

  // The typed confirmation: the button stays off until the tenant's name is typed
  // (the server checks it again); the time is asked for only when scheduling.
  for (const form of document.querySelectorAll("form[data-confirm-value]")) {
    const expected = form.dataset.confirmValue;
    const typed = form.querySelector("input[name=confirm]");
    const submit = form.querySelector("[data-confirm-submit]");
    const at = form.querySelector("input[name=at]");
    const sync = () => {
      submit.disabled = typed.value.trim() !== expected;
      const scheduled = form.querySelector("input[name=when][value=at]").checked;
      at.disabled = !scheduled;
      at.required = scheduled;
      submit.textContent = scheduled ? "Schedule the logout" : "Logout All Users";
    };
    form.addEventListener("input", sync);
    form.addEventListener("change", sync);
    sync();
  }

  // The Edges page follows the edges.
  const refresh = document.querySelector("[data-refresh]");
  if (refresh) {
    const seconds = Number(refresh.dataset.refresh) || 5;
    setInterval(() => {
      const busy = document.querySelector("dialog[open]") || document.activeElement.matches("input, select, textarea");
      if (!busy) location.reload();
    }, seconds * 1000);
  }
});
