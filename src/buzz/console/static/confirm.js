// Confirm steps: a link <a href="URL" data-confirm="question" data-confirm-button="label">
// opens the page's <dialog>, whose form POSTs to the same URL. Without this script the link
// goes to that URL's own confirm page, so the step is there either way.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const dialog = document.getElementById("confirm-dialog");
  if (!dialog || typeof dialog.showModal !== "function") {
    return;
  }
  const form = dialog.querySelector("form");
  const text = document.getElementById("confirm-text");
  const button = document.getElementById("confirm-button");
  document.getElementById("confirm-cancel").addEventListener("click", () => dialog.close());
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-confirm]");
    if (!link) {
      return;
    }
    event.preventDefault();
    form.action = link.getAttribute("href");
    text.textContent = link.dataset.confirm;
    button.textContent = link.dataset.confirmButton || "Confirm";
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  });
});
