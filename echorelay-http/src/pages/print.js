// The Print button of the backup codes page: shown only when this script
// runs (without it, the page says to use the browser's Print command).
"use strict";
document.querySelectorAll("[data-print]").forEach(function (button) {
  button.hidden = false;
  button.addEventListener("click", function () {
    window.print();
  });
});
