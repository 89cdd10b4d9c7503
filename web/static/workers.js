// The worker registry: each worker's status, the queues it consumes, its slots in use,
// the steps it runs (links to their runs), its last heartbeat and how much it processed.

import { api } from "./api.js";
import { alertLine, badge, every, formatTime, h } from "./dom.js";

const COLUMNS = ["Worker", "Status", "Queues", "Slots in use", "Current steps", "Last heartbeat", "Processed"];

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
      h("table", { id: "workers-table" }, h("thead", {}, h("tr", {}, COLUMNS.map((t) => h("th", {}, t)))), rows),
    ),
  );
  const refresh = async () => {
    const workers = await api("/api/workers");
    rows.replaceChildren(...workers.map(workerRow));
    if (!workers.length) rows.append(h("tr", {}, h("td", { colspan: COLUMNS.length, class: "muted" }, "No worker has reported in.")));
  };
  return every(3000, refresh, showError);
}

function workerRow(w) {
  return h(
    "tr",
    { "data-worker": w.name },
    h("td", {}, w.name),
    h("td", {}, badge(w.status)),
    h("td", { class: "queues" }, queuesOf(w)),
    h("td", { class: "slots" }, slotsOf(w)),
    h("td", { class: "current" }, currentSteps(w.current_steps || [])),
    h("td", {}, w.last_heartbeat ? `${formatTime(w.last_heartbeat)} (${w.seconds_since} s ago)` : "never"),
    h("td", {}, w.processed),
  );
}

function queuesOf(w) {
  if (!Array.isArray(w.queues)) return h("span", { class: "muted" }, "not reported");
  return w.queues.map((q) => h("code", { class: "queue" }, q));
}

/** "1 / 4": busy slots of all; a worker that is gone holds none. */
function slotsOf(w) {
  if (w.status !== "ok") return h("span", { class: "muted" }, "–");
  const total = w.concurrency ?? "?";
  const full = typeof w.concurrency === "number" && w.busy >= w.concurrency;
  return h("span", { class: full ? "full" : null, title: full ? "every slot is busy: new steps wait" : null }, `${w.busy} / ${total}`);
}

function currentSteps(steps) {
  if (!steps.length) return h("span", { class: "muted" }, "idle");
  return h(
    "ul",
    { class: "current-steps" },
    steps.map((s) =>
      h(
        "li",
        { "data-run": s.run_id, "data-step": s.step },
        h("a", { href: `/runs/${encodeURIComponent(s.run_id)}`, title: `run ${s.run_id}` }, s.step),
        ` #${s.attempt} · run ${String(s.run_id).slice(0, 8)}`,
        s.started_at ? h("span", { class: "muted" }, ` · since ${formatTime(s.started_at)}`) : null,
      ),
    ),
  );
}
