// Small progressive enhancements; every page works without them.
document.addEventListener("click", (event) => {
  const opener = event.target.closest("[data-open-dialog]");
  if (opener) {
    const dialog = document.getElementById(opener.dataset.openDialog);
    if (dialog) {
      event.preventDefault();
      // one dialog shared by several rows: the button names the action and the sentence
      const form = dialog.querySelector("[data-dialog-form]");
      if (form && opener.dataset.dialogAction) form.action = opener.dataset.dialogAction;
      const text = dialog.querySelector("[data-dialog-text]");
      if (text && opener.dataset.dialogText) text.textContent = opener.dataset.dialogText;
      dialog.showModal();
    }
  }
  const closer = event.target.closest("[data-close-dialog]");
  if (closer) { event.preventDefault(); closer.closest("dialog").close(); }
});

// The Deployment window's charts follow the KPI tiles: when the block shows figures computed at
// another time (Compute stats ended, the send's own recompute landed), the charts load again.
document.addEventListener("htmx:afterSettle", () => {
  const tiles = document.querySelector(".deployment-kpis[data-computed]");
  const charts = document.getElementById("deployment-charts");
  if (tiles && charts && window.htmx && tiles.dataset.computed !== charts.dataset.computed) {
    charts.dataset.computed = tiles.dataset.computed;
    window.htmx.trigger(charts, "refresh");
  }
});

// When a live block (the Deployment block) reports a new state, reload the page so the action bar,
// the journal and the dialog match it.
document.addEventListener("htmx:afterSettle", (event) => {
  const block = document.getElementById("deployment-block");
  const heading = document.querySelector("[data-page-state]");
  if (block && heading && block.dataset.state && block.dataset.state !== heading.dataset.pageState) {
    window.location.reload();
  }
});

// Behaviours the pages ask for with data attributes (no inline handlers: the Content-Security-Policy
// allows scripts from this site only).
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    return;
  }
  const once = form.querySelector("[data-submit-once]");
  if (once) {
    if (form.dataset.submitted) { event.preventDefault(); return; }
    form.dataset.submitted = "1";
    window.setTimeout(() => { once.disabled = true; }, 0);
  }
});
document.addEventListener("change", (event) => {
  if (event.target.matches("[data-submit-on-change]")) event.target.form.requestSubmit();
});
