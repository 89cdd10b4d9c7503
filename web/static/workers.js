// The worker registry.

import { api } from "./api.js";
import { alertLine, badge, every, formatTime, h } from "./dom.js";

export function workersPage(view) {
  const flower = document.body.dataset.flowerUrl || `${location.protocol}//${location.hostname}:5555/`;
  const rows = h("tbody");
  const [alert, showError] = alertLine();
  view.append(
    h(
      "section",
      { class: "workers" },
      h("h1", {}, "Workers"),
      h("p", {}, "Celery's own view of them is in ", h("a", { href: flower, id: "flower-link", target: "_blank", rel: "noopener" }, "Flower"), "."),
      alert,
      h(
        "table",
        { id: "workers-table" },
        h("thead", {}, h("tr", {}, ["Worker", "Status", "Last heartbeat", "Active runs", "Processed"].map((t) => h("th", {}, t)))),
        rows,
      ),
    ),
  );
  const refresh = async () => {
    const workers = await api("/api/workers");
    rows.replaceChildren(
      ...workers.map((w) =>
        h(
          "tr",
          { "data-worker": w.name },
          h("td", {}, w.name),
          h("td", {}, badge(w.status)),
          h("td", {}, w.last_heartbeat ? `${formatTime(w.last_heartbeat)} (${w.seconds_since} s ago)` : "never"),
          h("td", {}, w.active_runs),
          h("td", {}, w.processed),
        ),
      ),
    );
    if (!workers.length) rows.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No worker has reported in.")));
  };
  return every(3000, refresh, showError);
}
