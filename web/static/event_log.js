// A run's event log: one line per event, as it arrives, timed from the run's first event,
// with filters by type and step that apply to the lines shown and to those still to come.

import { h } from "./dom.js";
import { exactTime, sinceStart } from "./timeline.js";

/** The step filter's value for the run's own events (those without a step). */
const RUN_ONLY = "\u0000run";
/** The reader's choice, kept for the next run page. */
const HIDE_PROGRESS_KEY = "stepstream.eventLog.hideProgress";

/**
 * The log's element (its filters, then the list `#event-log`) and `append(event)`, which
 * keeps the view pinned to the bottom while the reader has not scrolled up.
 *
 * Progress lines are shown unless the reader hides them: the log is the run's record,
 * and a long step's ticks are the only sign in it that the step is alive. The switch is
 * one click away and remembered, since whoever hides them once wants them hidden again.
 */
export function createEventLog() {
  const list = h("ol", { id: "event-log", class: "event-log" });
  const typeFilter = h("select", { id: "log-type" }, h("option", { value: "" }, "All types"));
  const stepFilter = h(
    "select",
    { id: "log-step" },
    h("option", { value: "" }, "All steps"),
    h("option", { value: RUN_ONLY }, "The run only"),
  );
  const hideProgress = h("input", { id: "log-hide-progress", type: "checkbox" });
  hideProgress.checked = remembered();
  const count = h("span", { id: "log-count", class: "log-count muted", "aria-live": "polite" });
  const toolbar = h(
    "div",
    { class: "log-filters", role: "group", "aria-label": "Filter events" },
    h("label", {}, "Type", typeFilter),
    h("label", {}, "Step", stepFilter),
    h("label", {}, hideProgress, "Hide progress"),
    count,
  );
  const element = h("div", { class: "event-log-view" }, toolbar, list);

  let first = null;
  let total = 0;
  let shown = 0;
  // Option per type and per step, added as they first appear, with how many there are.
  const typeOptions = new Map();
  const stepOptions = new Map();

  const visible = (li) => {
    const type = li.dataset.type;
    const wanted = typeFilter.value;
    if (wanted ? type !== wanted : hideProgress.checked && type === "step_progress") return false;
    const step = stepFilter.value;
    if (!step) return true;
    return step === RUN_ONLY ? li.dataset.step === undefined : li.dataset.step === step;
  };

  const showCount = () => {
    count.textContent = shown === total ? `showing all ${total} events` : `showing ${shown} of ${total} events`;
  };

  const atBottom = () => list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  // Whether the reader is at the bottom, following new lines: learnt when the list
  // scrolls, never per line, since asking the layout after each appended line would
  // lay the whole page out again for every event of a replay (minutes for thousands).
  let pinned = true;
  let frame = null;
  // Where the log last scrolled itself: a scroll event reports it after more lines may
  // have come, and must not read as the reader leaving the bottom.
  let followedTo = 0;
  list.addEventListener("scroll", () => (pinned = list.scrollTop >= followedTo || atBottom()), { passive: true });
  const keepPinned = () => {
    if (frame !== null) return;
    frame = requestAnimationFrame(() => {
      frame = null;
      if (!pinned) return;
      list.scrollTop = list.scrollHeight;
      followedTo = list.scrollTop;
    });
  };

  const refilter = () => {
    shown = 0;
    for (const li of list.children) {
      li.hidden = !visible(li);
      if (!li.hidden) shown += 1;
    }
    // Hiding progress only matters while every type shows: a type chosen says it all.
    hideProgress.disabled = Boolean(typeFilter.value);
    showCount();
    keepPinned();
  };
  typeFilter.addEventListener("change", refilter);
  stepFilter.addEventListener("change", refilter);
  hideProgress.addEventListener("change", () => {
    try {
      localStorage.setItem(HIDE_PROGRESS_KEY, hideProgress.checked ? "1" : "0");
    } catch {
      // Storage refused (private mode, quota): the switch still works for this page.
    }
    refilter();
  });

  const counted = (options, select, value, label) => {
    let entry = options.get(value);
    if (!entry) {
      entry = { option: h("option", { value }), n: 0 };
      options.set(value, entry);
      select.append(entry.option);
    }
    entry.n += 1;
    entry.option.textContent = `${label} (${entry.n})`;
  };

  const append = (event) => {
    const at = Date.parse(event.ts);
    if (first === null && !Number.isNaN(at)) first = at;
    const what = [event.step, event.status, event.message, event.progress !== undefined ? `${Math.round(event.progress * 100)}%` : null]
      .filter((x) => x !== undefined && x !== null && x !== "")
      .join(" · ");
    const time = Number.isNaN(at)
      ? h("time", {}, "")
      : h("time", { datetime: event.ts, title: `${exactTime(at)} · ${event.ts}` }, sinceStart(at - first));
    const li = h("li", { "data-seq": event.seq, "data-type": event.type, "data-step": event.step }, time, h("b", {}, event.type), what);
    counted(typeOptions, typeFilter, event.type, event.type);
    if (event.step !== undefined) counted(stepOptions, stepFilter, event.step, event.step);
    total += 1;
    li.hidden = !visible(li);
    if (!li.hidden) shown += 1;
    list.append(li);
    showCount();
    keepPinned();
  };
  refilter();
  return { element, append };
}

function remembered() {
  try {
    return localStorage.getItem(HIDE_PROGRESS_KEY) === "1";
  } catch {
    return false;
  }
}
