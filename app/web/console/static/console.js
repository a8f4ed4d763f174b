// The console's only script: live regions, bulk selection and the "refreshing" switch.
// Served from this site (the Content-Security-Policy forbids inline scripts); the pages work
// without it, only less live.
"use strict";

// A region marked data-refresh="URL" is replaced every data-every seconds (5 by default) by
// what URL answers: a fragment of the same page. Hidden tabs do not poll. An expired session
// answers 401, and the page reloads to the sign-in form.
function refreshRegion(region) {
  const url = region.dataset.refresh;
  const seconds = Number(region.dataset.every || 5);
  const tick = async () => {
    if (document.hidden || region.dataset.paused === "yes") return;
    try {
      const answer = await fetch(url, {
        headers: { "X-Console-Fetch": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (answer.status === 401) {
        window.location.reload();
        return;
      }
      if (answer.ok) {
        region.innerHTML = await answer.text();
        region.dataset.refreshedAt = new Date().toISOString();
        region.dispatchEvent(new CustomEvent("console:refreshed", { bubbles: true }));
      }
    } catch (error) {
      // The web process is restarting or the network dropped: the next tick tries again.
    }
  };
  window.setInterval(tick, seconds * 1000);
}

// A checkbox marked data-select-all checks or clears every checkbox named in its value
// within the same form (the bulk actions' "select every message on this page").
function selectAll(box) {
  box.addEventListener("change", () => {
    const form = box.closest("form");
    if (!form) return;
    for (const item of form.querySelectorAll(`input[type=checkbox][name="${box.value}"]`)) {
      item.checked = box.checked;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(refreshRegion);
  document.querySelectorAll("input[data-select-all]").forEach(selectAll);
});
