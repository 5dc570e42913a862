// miniauth console: the little that needs a script. Every page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // An erase button stays disabled until the confirmation typed matches exactly.
  for (const input of document.querySelectorAll("input[data-must-equal]")) {
    const button = input.form && input.form.querySelector("button[type=submit]");
    if (!button) continue;
    const sync = () => {
      const ok = input.value.trim() === input.dataset.mustEqual;
      button.disabled = !ok;
      input.setAttribute("aria-invalid", ok || input.value === "" ? "false" : "true");
    };
    input.addEventListener("input", sync);
    sync();
  }
  // After an action, move focus to its announcement so keyboard users hear it.
  const notice = document.querySelector("main .notice, main .alert");
  if (notice) {
    notice.setAttribute("tabindex", "-1");
    notice.focus();
  }
});
