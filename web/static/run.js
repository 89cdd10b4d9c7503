// One run, followed live over the WebSocket: its header, its step graph or timeline, a
// step's details and its events. Each part is its own module; this one applies events.

import { ApiError, api } from "./api.js";
import { TERMINAL, alertLine, badge, h } from "./dom.js";
import { createEventLog } from "./event_log.js";
import { drawGraph } from "./graph.js";
import { follow } from "./live.js";
import { createRunHeader } from "./run_header.js";
import { createStepPanel } from "./step_panel.js";
import { createTimeline } from "./timeline.js";

export function runPage(view, runId) {
  const state = {
    steps: new Map(),
    lastSeq: 0,
    lastId: null,
    status: null,
    finished: false,
    stopped: false,
    selected: null,
    // Every status the page drew, in order: what a person watching saw happen.
    timeline: [],
  };
  window.stepstreamRun = state;
  const statusBadge = h("span", { id: "run-status" });
  const connection = h("span", { id: "connection", class: "connection", "data-state": "connecting" }, "connecting…");
  const cancel = h("button", { id: "cancel", type: "button", disabled: true }, "Cancel run");
  const [alert, showError] = alertLine();
  const message = h("p", { id: "run-message", class: "muted" });
  const graph = h("div", { id: "graph", class: "graph" });
  const detail = h("aside", { id: "detail", class: "detail", hidden: true });
  const log = createEventLog();
  const timeline = createTimeline();
  const panel = createStepPanel(detail, runId, () => (state.selected = null));
  const title = h("h1", {}, "Run ", h("code", {}, runId));
  const header = createRunHeader(runId);
  // Why a queued run waits (no live worker, every slot busy), as the API explains it.
  const waiting = h("p", { id: "queued-reason", class: "waiting", hidden: true });
  let drawStep = () => {};
  const tabs = h("div", { class: "tabs", role: "tablist" });
  const graphPane = h("div", { class: "graph-pane", role: "tabpanel" }, graph);
  const timelinePane = h("div", { class: "timeline-pane", role: "tabpanel", hidden: true }, timeline.element);
  for (const [name, pane] of [["Graph", graphPane], ["Timeline", timelinePane]]) {
    const tab = h("button", { type: "button", role: "tab", "data-tab": name.toLowerCase(), "aria-selected": String(pane === graphPane) }, name);
    tab.addEventListener("click", () => {
      for (const other of tabs.children) other.setAttribute("aria-selected", String(other === tab));
      graphPane.hidden = pane !== graphPane;
      timelinePane.hidden = pane !== timelinePane;
    });
    tabs.append(tab);
  }
  view.append(
    h(
      "section",
      { class: "run" },
      h("div", { class: "run-head" }, title, statusBadge, connection, cancel),
      message,
      waiting,
      alert,
      header.element,
      tabs,
      h("div", { class: "run-body" }, h("div", { class: "panes" }, graphPane, timelinePane), detail),
      h("h2", {}, "Events"),
      log.element,
    ),
  );

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      await api(`/api/runs/${encodeURIComponent(runId)}/cancel`, { method: "POST" });
      message.textContent = "Cancelling…";
    } catch (error) {
      showError(error);
      cancel.disabled = TERMINAL.has(state.status);
    }
  });

  const setStatus = (status, text) => {
    state.status = status;
    // A tab in the background still tells how its run is doing.
    if (!state.stopped) document.title = `${status} · run ${runId.slice(0, 8)} · stepstream`;
    statusBadge.replaceChildren(badge(status));
    cancel.disabled = TERMINAL.has(status);
    if (text !== undefined) message.textContent = text;
  };
  const setConnection = (what, text) => {
    connection.dataset.state = what;
    connection.textContent = text;
  };

  const apply = (event) => {
    // After a reconnect the server resumes after the last id, but a page can also be
    // handed an event twice (two sockets racing): seq says what was seen.
    if (event.seq <= state.lastSeq) return;
    state.lastSeq = event.seq;
    state.lastId = event.id;
    const step = event.step === undefined ? null : state.steps.get(event.step);
    switch (event.type) {
      case "run_queued":
        setStatus("queued");
        break;
      case "run_started":
        setStatus("running", `Started on ${event.worker}`);
        break;
      case "run_resumed":
        message.textContent = `Resumed on ${event.worker} (${event.reason})`;
        break;
      case "run_finished":
        state.finished = true;
        setStatus(event.status, event.message || "");
        explainWait(null);
        // The result is the last steps' outputs, which the snapshot holds in full.
        api(`/api/runs/${encodeURIComponent(runId)}`, { exact: true }).then(header.showResult).catch(showError);
        break;
      case "step_started":
        Object.assign(step, {
          status: "running", attempt: event.attempt, started: Date.parse(event.ts),
          progress: 0, note: "", durationMs: null,
        });
        break;
      case "step_progress":
        step.progress = event.progress;
        step.note = event.message || "";
        break;
      case "step_log":
        step.logs.push(`${event.ts}  ${event.message}`);
        break;
      case "step_retrying":
        Object.assign(step, { status: "retrying", note: `retry in ${event.delay_s} s` });
        step.logs.push(`${event.ts}  attempt ${event.attempt} failed: ${event.message}`);
        break;
      case "step_finished":
        Object.assign(step, {
          status: event.status, attempt: event.attempt, durationMs: event.duration_ms,
          message: event.message || "", output: event.output, truncated: Boolean(event.output_truncated),
          progress: event.status === "succeeded" ? 1 : step.progress, note: "",
        });
        break;
    }
    if (step) {
      drawStep(step);
      state.timeline.push([step.name, step.status]);
      if (state.selected === step) panel.show(step).catch(showError);
    }
    header.update(event);
    log.append(event);
    timeline.update(event, state.steps);
  };

  const explainWait = (reason) => {
    waiting.hidden = !reason;
    waiting.textContent = reason ? `Waiting: ${reason}` : "";
  };
  // While the run waits, ask now and then why: the answer changes as workers come and go.
  const pollWait = async () => {
    if (state.stopped || state.finished) return;
    const snapshot = await api(`/api/runs/${encodeURIComponent(runId)}`, { exact: true });
    explainWait(state.finished ? null : snapshot.queued_reason);
  };
  const waitPoller = setInterval(() => {
    if (state.status === "queued" || waiting.textContent) pollWait().catch(() => {});
  }, 2000);

  const build = (snapshot) => {
    title.append(" ", h("span", { class: "muted" }, snapshot.scenario_id));
    header.build(snapshot);
    explainWait(snapshot.queued_reason);
    for (const s of snapshot.steps) {
      state.steps.set(s.name, {
        name: s.name, tool: s.tool, needs: s.needs || [], input: s.input, status: "pending",
        attempt: 0, progress: 0, note: "", logs: [],
      });
    }
    const select = (step) => {
      state.selected = step;
      panel.show(step).catch(showError);
    };
    drawStep = drawGraph(graph, state.steps, select);
    // A row of the timeline opens its step's panel, as its box in the graph does.
    timeline.element.addEventListener("click", (event) => {
      const row = event.target.closest(".tl-row[data-step]");
      const step = row && state.steps.get(row.dataset.step);
      if (step) select(step);
    });
    // The run's status comes from its events, replayed from the start, so that the
    // page never shows an end before the steps that led to it.
  };

  // Running steps show their elapsed time.
  const ticker = setInterval(() => {
    for (const step of state.steps.values()) if (step.status === "running") drawStep(step);
    if (!state.finished) header.tick();
  }, 1000);

  let stopFollowing = () => {};
  api(`/api/runs/${encodeURIComponent(runId)}`, { exact: true })
    .then((snapshot) => {
      if (state.stopped) return;
      build(snapshot);
      stopFollowing = follow(runId, {
        cursor: () => state.lastId,
        finished: () => state.finished,
        onEvent: apply,
        onConnection: setConnection,
      });
    })
    .catch((error) => {
      if (error instanceof ApiError && error.status === 404) {
        // No run to watch or cancel: say so, and where to go instead.
        state.stopped = true;
        document.title = "Run not found · stepstream";
        view.replaceChildren(
          h(
            "section",
            { class: "not-found" },
            h("h1", {}, "Run not found"),
            h("p", {}, "There is no run ", h("code", {}, runId), " (finished runs expire after STEPSTREAM_RUN_TTL_S)."),
            h("p", {}, h("a", { href: "/#runs" }, "All runs"), " · ", h("a", { href: "/#scenarios" }, "Start a run")),
          ),
        );
        return;
      }
      setConnection("finished", "");
      showError(error);
    });

  return () => {
    state.stopped = true;
    clearInterval(ticker);
    clearInterval(waitPoller);
    stopFollowing();
  };
}
