// The runs list: every run, newest first, with filters.

import { api } from "./api.js";
import { RUN_STATUSES, alertLine, badge, every, formatDuration, formatTime, h, runDuration } from "./dom.js";

export function runsPage(view) {
  const status = h(
    "select",
    { id: "filter-status", "aria-label": "status" },
    h("option", { value: "" }, "any status"),
    RUN_STATUSES.map((s) => h("option", { value: s }, s)),
  );
  const scenario = h(
    "select",
    { id: "filter-scenario", "aria-label": "scenario" },
    h("option", { value: "" }, "any scenario"),
  );
  const rows = h("tbody");
  const [alert, showError] = alertLine();
  view.append(
    h(
      "section",
      { class: "runs" },
      h("h1", {}, "Runs"),
      h("div", { class: "filters" }, status, scenario, h("a", { href: "/#scenarios" }, "Start a run…")),
      alert,
      h(
        "table",
        { id: "runs-table" },
        h("thead", {}, h("tr", {}, ["Run", "Scenario", "Status", "Started", "Duration"].map((t) => h("th", {}, t)))),
        rows,
      ),
    ),
  );
  api("/api/scenarios")
    .then((list) => list.forEach((s) => scenario.append(h("option", { value: s.scenario_id }, s.scenario_id))))
    .catch(showError);

  const refresh = async () => {
    const query = new URLSearchParams({ limit: "50" });
    if (status.value) query.set("status", status.value);
    if (scenario.value) query.set("scenario_id", scenario.value);
    const page = await api(`/api/runs?${query}`);
    rows.replaceChildren(
      ...page.runs.map((run) =>
        h(
          "tr",
          { "data-run": run.run_id },
          h("td", {}, h("a", { href: `/runs/${run.run_id}`, title: run.run_id }, run.run_id.slice(0, 8))),
          h("td", {}, run.scenario_id),
          h("td", {}, badge(run.status)),
          h("td", {}, formatTime(run.started_at || run.created_at)),
          h("td", {}, formatDuration(runDuration(run))),
        ),
      ),
    );
    if (!page.runs.length) rows.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No runs.")));
  };
  status.addEventListener("change", () => refresh().catch(showError));
  scenario.addEventListener("change", () => refresh().catch(showError));
  return every(2000, refresh, showError);
}
