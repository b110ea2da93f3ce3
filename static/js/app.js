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
