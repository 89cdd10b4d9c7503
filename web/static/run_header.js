// A run page's header facts: its times, queue time and duration, worker, input and
// result, and buttons that copy its id and link. Kept current from the run's events.

import { formatDuration, formatTime, h } from "./dom.js";

/** The header's element; `build(snapshot)` once, `update(event)` per event, `tick()` each second. */
export function createRunHeader(runId) {
  const facts = {
    created: h("dd", { "data-fact": "created" }),
    started: h("dd", { "data-fact": "started" }),
    finished: h("dd", { "data-fact": "finished" }),
    queued: h("dd", { "data-fact": "queue-time" }),
    duration: h("dd", { "data-fact": "duration" }),
    worker: h("dd", { "data-fact": "worker" }),
  };
  const labels = {
    created: "Created", started: "Started", finished: "Finished",
    queued: "Queue time", duration: "Duration", worker: "Worker",
  };
  const list = h("dl", { class: "run-facts" }, Object.entries(facts).map(([key, dd]) => h("div", {}, h("dt", {}, labels[key]), dd)));
  const input = h("pre", { id: "run-input", class: "json" });
  const result = h("div", { id: "run-output" });
  const copies = h(
    "div",
    { class: "copies" },
    copyButton("copy-id", "Copy id", () => runId),
    copyButton("copy-link", "Copy link", () => `${location.origin}/runs/${encodeURIComponent(runId)}`),
  );
  const element = h(
    "div",
    { class: "run-header" },
    list,
    copies,
    h(
      "div",
      { class: "run-io" },
      h("details", { open: true }, h("summary", {}, "Input"), input),
      h("details", { open: true }, h("summary", {}, "Result"), result),
    ),
  );
  const times = { created: null, started: null, finished: null };

  const show = () => {
    facts.created.textContent = formatTime(times.created);
    facts.started.textContent = times.started ? formatTime(times.started) : "not yet";
    facts.finished.textContent = times.finished ? formatTime(times.finished) : "not yet";
    const created = Date.parse(times.created);
    const started = times.started ? Date.parse(times.started) : null;
    const finished = times.finished ? Date.parse(times.finished) : null;
    // A queued run's wait grows until it starts; a run that never started waited until its end.
    const queueEnd = started ?? finished ?? Date.now();
    facts.queued.textContent = formatDuration(Math.max(0, queueEnd - created));
    facts.duration.textContent = started ? formatDuration(Math.max(0, (finished ?? Date.now()) - started)) : "not started";
  };

  const build = (snapshot) => {
    Object.assign(times, { created: snapshot.created_at, started: snapshot.started_at, finished: snapshot.finished_at });
    facts.worker.textContent = snapshot.worker || "none yet";
    input.textContent = JSON.stringify(snapshot.input, null, 2);
    showResult(snapshot);
    show();
  };

  /** The run's result: what its last steps (those no other step needs) returned. */
  const showResult = (snapshot) => {
    if (!snapshot.finished_at) {
      result.replaceChildren(h("p", { class: "muted" }, "when the run has finished"));
      return;
    }
    const needed = new Set(snapshot.steps.flatMap((s) => s.needs || []));
    const last = snapshot.steps.filter((s) => !needed.has(s.name));
    const output = snapshot.output !== undefined && snapshot.output !== null
      ? snapshot.output
      : Object.fromEntries(last.map((s) => [s.name, s.output]));
    result.replaceChildren(
      h("p", { class: "muted" }, snapshot.output != null ? "The run's outputs." : `What its last ${last.length === 1 ? "step" : "steps"} returned.`),
      h("pre", { class: "json" }, JSON.stringify(output, null, 2)),
    );
  };

  const update = (event) => {
    if (event.type === "run_started") {
      times.started = times.started || event.ts;
      facts.worker.textContent = event.worker;
    } else if (event.type === "run_resumed") {
      facts.worker.textContent = `${event.worker} (took over: ${event.reason})`;
    } else if (event.type === "run_finished") {
      times.finished = event.finished_at || event.ts;
    } else {
      return;
    }
    show();
  };

  return { element, build, update, tick: show, showResult };
}

function copyButton(id, label, text) {
  const button = h("button", { type: "button", id, class: "copy" }, label);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text());
      button.textContent = "Copied";
    } catch {
      // No clipboard (an insecure origin): show the text selected, ready for Ctrl-C.
      prompt(label, text());
    }
    setTimeout(() => (button.textContent = label), 1500);
  });
  return button;
}
