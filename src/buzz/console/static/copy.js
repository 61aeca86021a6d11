// Copy buttons: <button data-copy="ID"> copies the text of the element with that id. Without
// the clipboard (or without this script), the text is selected for the user to copy.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) {
    return;
  }
  const source = document.getElementById(button.dataset.copy);
  const text = source.textContent.trim();
  const select = () => {
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  };
  if (!navigator.clipboard) {
    select();
    button.textContent = "Selected: copy it";
    return;
  }
  navigator.clipboard.writeText(text).then(
    () => {
      button.textContent = "Copied";
    },
    () => {
      select();
      button.textContent = "Selected: copy it";
    },
  );
});
