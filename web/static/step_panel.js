// The panel of one step: its status, the input its tool received (or the template it
// was built from), its output, the traceback of a tool exception, the history of its
// attempts and its logs.

import { api } from "./api.js";
import { badge, formatDuration, formatTime, h } from "./dom.js";

/** `show(step)` fills `aside` with the step's details; `hide()` closes it. */
export function createStepPanel(aside, runId, onClose) {
  // The snapshot's view of the shown step, fetched again when its status or attempt
  // changes (not on every progress tick): resolved input, traceback and attempts.
  let stored = null;
  let storedKey = null;
  let showTemplate = false;
  let current = null;

  const hide = () => {
    aside.hidden = true;
    current = null;
    onClose();
  };

  // Escape closes the panel, as it closes a drawer on a phone; gone with its page.
  const onKey = (event) => {
    if (!aside.isConnected) document.removeEventListener("keydown", onKey);
    else if (event.key === "Escape" && !aside.hidden) hide();
  };
  document.addEventListener("keydown", onKey);

  const show = async (step) => {
    const key = `${step.name}/${step.status}/${step.attempt}`;
    current = step;
    aside.hidden = false;
    if (key !== storedKey) {
      if (stored?.name !== step.name) showTemplate = false;
      render(step);
      const snapshot = await api(`/api/runs/${encodeURIComponent(runId)}`, { exact: true });
      stored = snapshot.steps.find((s) => s.name === step.name) || null;
      storedKey = key;
      if (current !== step) return;
    }
    render(step);
  };

  const render = (step) => {
    const mine = stored?.name === step.name ? stored : null;
    const output = step.truncated || step.output === undefined ? mine?.output : step.output;
    const finished = ["succeeded", "failed", "cancelled", "skipped"].includes(step.status);
    const parts = [
      h("button", { type: "button", class: "close", "aria-label": "close", onclick: hide }, "×"),
      h("h2", { title: step.name }, step.name),
      h("p", {}, badge(step.status), ` ${step.tool} · attempt ${step.attempt || 0}`),
      step.message ? h("p", { class: "step-message" }, step.message) : null,
      mine?.traceback
        ? h("details", { class: "traceback", open: true }, h("summary", {}, "Traceback"), h("pre", { id: "step-traceback" }, mine.traceback))
        : null,
      inputSection(step, mine),
      h("h3", {}, "Output"),
      output === undefined || output === null
        ? h("p", { class: "muted" }, finished ? "none" : "none yet")
        : json(output, "step-output"),
      h("h3", {}, "Attempts"),
      attemptsTable(mine?.attempts || []),
      h("h3", {}, "Logs"),
      step.logs.length ? h("pre", { class: "logs" }, step.logs.join("\n")) : h("p", { class: "muted" }, "none"),
    ];
    aside.replaceChildren(...parts.filter(Boolean));
  };

  /** The input the tool received, or on a toggle the template it was resolved from. */
  const inputSection = (step, mine) => {
    const toggle = h(
      "button",
      { type: "button", id: "input-toggle", class: "toggle", "aria-pressed": String(showTemplate) },
      showTemplate ? "Show the values received" : "Show the template",
    );
    toggle.addEventListener("click", () => {
      showTemplate = !showTemplate;
      render(step);
    });
    let body;
    if (showTemplate) body = json(step.input, "step-input-template");
    else if (mine?.resolved_input_truncated) body = h("p", { class: "muted" }, "Too large to keep; the template shows where it came from.");
    else if (mine?.resolved_input === undefined || mine?.resolved_input === null) body = h("p", { class: "muted" }, "Resolved when the step starts.");
    else body = json(mine.resolved_input, "step-input");
    return h("div", { class: "step-input" }, h("h3", {}, showTemplate ? "Input template" : "Input", " ", toggle), body);
  };

  return { show, hide };
}

function json(value, id) {
  return h("pre", { id, class: "json" }, JSON.stringify(value, null, 2));
}

/** One row per attempt: how it ended, where, when, and why another followed. */
function attemptsTable(attempts) {
  if (!attempts.length) return h("p", { class: "muted" }, "none yet");
  const table = h(
    "table",
    { class: "attempts", id: "attempts" },
    h("thead", {}, h("tr", {}, ["#", "Status", "Worker", "Started", "Duration", "Why"].map((t) => h("th", {}, t)))),
    h(
      "tbody",
      {},
      attempts.map((a) =>
        h(
          "tr",
          { "data-attempt": a.attempt, "data-status": a.status, "data-reason": a.reason || "" },
          h("td", {}, String(a.attempt)),
          h("td", {}, badge(a.status)),
          h("td", { class: "worker" }, a.worker || ""),
          h("td", { title: a.finished_at ? `ended ${formatTime(a.finished_at)}` : "" }, formatTime(a.started_at)),
          h("td", {}, formatDuration(a.duration_ms)),
          h("td", { class: "why" }, [reasonText(a.reason), a.message].filter(Boolean).join(": ")),
        ),
      ),
    ),
  );
  // A phone's drawer is narrower than the table: the table scrolls, not the page.
  return h("div", { class: "attempts-scroll" }, table);
}

const REASONS = {
  retry: "failed, retried",
  worker_lost: "its worker was lost; taken over",
  shutdown: "handed back at a worker shutdown",
  timeout: "timed out",
  cancelled: "the run was cancelled",
};

function reasonText(reason) {
  return reason ? REASONS[reason] || reason : "";
}
