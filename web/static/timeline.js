// A run's timeline: a waterfall of its steps, one row each in definition order, with
// every attempt on one time axis running from the run's first event to now (or its end).
//
// The picture is rebuilt from events alone, so a page opened after the run ended, which
// replays every event from the start, draws the same thing as a page that watched live.
// Positions are percentages of the axis: the chart needs no measuring, stays right when
// its tab is hidden or the window resized, and a running bar grows by a style change.

import { h } from "./dom.js";

const HOUR = 3_600_000;
const MINUTE = 60_000;
/** Tick spacings the axis picks from: round numbers in each unit. */
const TICK_STEPS = [
  1, 2, 5, 10, 20, 50, 100, 200, 250, 500,
  1_000, 2_000, 5_000, 10_000, 15_000, 30_000,
  MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE,
  HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, 24 * HOUR,
];
/** Room each tick label needs, so a phone gets fewer ticks than a wide screen. */
const TICK_PX = 90;
/** How often running bars grow while the run runs. */
const TICK_MS = 250;
/** More running bars than this hold still instead of pulsing. */
const MANY_RUNNING = 20;

/** "+1.24 s", "+2 min 3.5 s": a time since the run's first event. */
export function sinceStart(ms) {
  if (ms < 60_000) return `+${(Math.max(ms, 0) / 1000).toFixed(2)} s`;
  return `+${spell(Math.round(ms / 100) * 100)}`;
}

// One formatter for every time shown: toLocaleTimeString builds a new one per call,
// which costs more than drawing a row (the log times each event, the timeline each bar).
const CLOCK = new Intl.DateTimeFormat([], {
  hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hour12: false,
});

/** "14:03:27.512": a wall-clock time to the millisecond, in the browser's time zone. */
export function exactTime(ms) {
  return CLOCK.format(new Date(ms));
}

/** "250 ms", "1.5 s", "2 min 30 s", "1 h 5 min": a duration without rounding it away. */
export function spell(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const hours = Math.floor(ms / HOUR);
  const minutes = Math.floor((ms % HOUR) / MINUTE);
  const seconds = Number(((ms % MINUTE) / 1000).toFixed(3));
  const parts = [];
  if (hours) parts.push(`${hours} h`);
  if (minutes) parts.push(`${minutes} min`);
  if (seconds || !parts.length) parts.push(`${seconds} s`);
  return parts.join(" ");
}

/** The timeline's element and `update(event, steps)`, called after each applied event. */
export function createTimeline() {
  // What the events said, in milliseconds since the epoch (the events' own clock).
  const run = { first: null, started: null, end: null, status: null, worker: null, last: 0, resumed: null };
  /** name → {name, attempts, ready, done, mark, pendingWait, row, track, meta} */
  const rows = new Map();
  let steps = new Map();
  let ticker = null;
  let frame = null;
  let stale = false;
  // Segments whose tooltip is worded for good (see `place`).
  const titled = new WeakMap();

  const axis = h("div", { class: "tl-axis", "aria-hidden": "true" });
  const grid = h("div", { class: "tl-gridlines", "aria-hidden": "true" });
  const runTrack = h("div", { class: "tl-track" });
  const body = h(
    "div",
    { class: "tl-body" },
    grid,
    h("div", { class: "tl-row tl-run-row", "data-row": "run" }, h("div", { class: "tl-label" }, h("span", { class: "tl-name" }, "run")), runTrack),
  );
  const empty = h("p", { class: "tl-empty muted" }, "Nothing has happened yet.");
  const element = h(
    "div",
    { id: "timeline", class: "timeline" },
    legend(),
    empty,
    h("div", { class: "tl-scroll" }, h("div", { class: "tl-head" }, h("div", { class: "tl-label muted" }, "step"), axis), body),
  );
  const runWait = segment("tl-wait");
  const runBar = segment("tl-bar");
  runTrack.append(runWait, runBar);

  const rowOf = (name) => {
    let row = rows.get(name);
    if (row) return row;
    const nameEl = h("span", { class: "tl-name", title: name }, name);
    const meta = h("span", { class: "tl-meta muted" });
    const track = h("div", { class: "tl-track" });
    row = {
      name, attempts: [], ready: null, done: null, mark: null, pendingWait: null, track, meta,
      element: h("div", { class: "tl-row", "data-step": name }, h("div", { class: "tl-label" }, nameEl, meta), track),
    };
    rows.set(name, row);
    body.append(row.element);
    return row;
  };

  const current = (row) => {
    const last = row.attempts.at(-1);
    return last && last.end === null ? last : null;
  };

  // When a step could first have started: its needs all done, or the run started.
  const readyAt = (name) => {
    const needs = steps.get(name)?.needs || [];
    if (!needs.length) return run.started ?? run.first;
    let latest = null;
    for (const need of needs) {
      const done = rows.get(need)?.done;
      if (done === null || done === undefined) return null;
      latest = Math.max(latest ?? done, done);
    }
    return latest;
  };

  const apply = (event, at) => {
    const row = event.step === undefined ? null : rowOf(event.step);
    switch (event.type) {
      case "run_queued":
        break;
      case "run_started":
        run.started = at;
        run.worker = event.worker;
        break;
      case "run_resumed":
        run.resumed = { at, worker: event.worker, reason: event.reason };
        break;
      case "run_finished":
        run.end = at;
        run.status = event.status;
        for (const r of rows.values()) {
          const open = current(r);
          if (open) Object.assign(open, { end: at, status: "unknown" });
        }
        break;
      case "step_started": {
        const open = current(row);
        let waitFrom = row.pendingWait ?? (row.attempts.length ? null : readyAt(row.name));
        if (open) {
          // Superseded without ending: its worker was lost and another took it over.
          const resumed = run.resumed && run.resumed.at >= open.start ? run.resumed : null;
          Object.assign(open, { end: resumed ? resumed.at : at, status: "lost", lost: resumed || { at, reason: "lost" } });
          waitFrom = open.end;
        }
        const attempt = {
          n: event.attempt, start: at, end: null, status: "running", worker: event.worker,
          waitFrom: waitFrom !== null && waitFrom < at ? waitFrom : null, progress: 0,
          message: "", durationMs: null, backoff: null, lost: null,
          wait: segment("tl-wait"), bar: segment("tl-bar"), gap: null,
        };
        row.attempts.push(attempt);
        row.pendingWait = null;
        row.track.append(attempt.wait, attempt.bar);
        break;
      }
      case "step_progress": {
        const open = current(row);
        if (open) open.progress = event.progress;
        break;
      }
      case "step_retrying": {
        const open = current(row);
        if (!open) break;
        const until = at + (Number(event.delay_s) || 0) * 1000;
        Object.assign(open, { end: at, status: "retried", message: event.message || "" });
        open.backoff = { from: at, to: until, delayS: event.delay_s, message: event.message || "" };
        open.gap = segment("tl-backoff");
        row.track.append(open.gap);
        row.pendingWait = until;
        break;
      }
      case "step_finished": {
        const open = current(row);
        row.done = at;
        if (open) {
          Object.assign(open, {
            end: at, status: event.status, message: event.message || "", durationMs: event.duration_ms ?? null,
          });
          break;
        }
        // Never started (skipped, cancelled while pending), or cancelled in a backoff.
        const last = row.attempts.at(-1);
        if (last?.backoff && last.backoff.to > at) last.backoff.to = at;
        row.mark = { at, status: event.status, message: event.message || "", reused: Boolean(event.reused) };
        row.markEl = row.markEl || segment("tl-mark");
        row.track.append(row.markEl);
        break;
      }
    }
  };

  const render = () => {
    frame = null;
    if (run.first === null) return;
    // A hidden tab is drawn when it is shown (the observer below): a run of thousands
    // of steps costs nothing while its graph is looked at.
    if (!element.offsetWidth) {
      stale = true;
      return;
    }
    stale = false;
    empty.hidden = true;
    const end = run.end ?? Math.max(Date.now(), run.last);
    const span = Math.max(end - run.first, 1);
    const pct = (t) => `${(((t - run.first) / span) * 100).toFixed(3)}%`;
    // A tooltip is worded once its segment has ended (`final`): rewording hundreds of
    // them every tick would cost more than moving them.
    const place = (el, from, to, title, final = false) => {
      el.hidden = from === null || to === null;
      if (el.hidden) return;
      el.style.left = pct(from);
      el.style.width = pct(run.first + Math.max(to - from, 0));
      el.dataset.ms = String(Math.round(to - from));
      if (title === undefined || titled.get(el) === true) return;
      const text = title();
      if (el.title !== text) el.title = text;
      titled.set(el, final);
    };
    const when = (t) => `${exactTime(t)} (${sinceStart(t - run.first)})`;

    drawAxis(axis, grid, span, Math.max(2, Math.min(10, Math.floor(axis.clientWidth / TICK_PX))));
    const started = run.started ?? end;
    place(runWait, run.first, started, () => `run queued ${spell(started - run.first)}\nfrom ${when(run.first)}`);
    runBar.dataset.status = run.status || "running";
    place(
      runBar, run.started, run.started === null ? null : end,
      run.started === null ? undefined : () => lines(
        `run ${run.status || "running"}`, `started ${when(run.started)}`,
        run.end !== null ? `ended ${when(run.end)}` : null, `duration ${spell(end - run.started)}`,
        run.worker ? `worker ${run.worker}` : null,
      ),
    );
    let running = 0;

    for (const row of rows.values()) {
      const name = row.name;
      for (const a of row.attempts) {
        const to = a.end ?? end;
        const label = `${name} · attempt ${a.n}`;
        place(a.wait, a.waitFrom, a.waitFrom === null ? null : a.start, () => lines(
          `${label} waited ${spell(a.start - a.waitFrom)} to start`,
          `ready ${when(a.waitFrom)}`, `started ${when(a.start)}`,
        ), true);
        a.bar.dataset.status = a.status;
        a.bar.dataset.attempt = String(a.n);
        if (a.lost) a.bar.dataset.lost = a.lost.reason;
        if (a.end === null) running += 1;
        place(a.bar, a.start, to, () => lines(
          `${label}: ${a.status === "retried" ? "failed, retried" : a.status}`,
          `started ${when(a.start)}`,
          a.end !== null ? `${a.status === "lost" ? "lost by" : "ended"} ${when(a.end)}` : null,
          `duration ${spell(a.durationMs ?? to - a.start)}`,
          a.status === "running" && a.progress ? `progress ${Math.round(a.progress * 100)}%` : null,
          a.worker ? `worker ${a.worker}` : null,
          a.lost ? `lost (${a.lost.reason})${a.lost.worker ? `, taken over by ${a.lost.worker}` : ""}` : null,
          a.message || null,
        ), a.end !== null);
        if (a.gap) {
          const b = a.backoff;
          a.gap.dataset.attempt = String(a.n);
          // A cancel during the backoff shortens it: final once the step is done.
          place(a.gap, b.from, Math.min(b.to, Math.max(end, b.from)), () => lines(
            `${name}: retry backoff ${b.delayS} s after attempt ${a.n} failed`,
            `from ${when(b.from)}`, `until ${when(b.to)}`, b.message || null,
          ), row.done !== null);
        }
      }
      if (row.markEl) {
        row.markEl.dataset.status = row.mark.status;
        place(row.markEl, row.mark.at, row.mark.at, () => lines(
          `${name} ${row.mark.status}${row.mark.reused ? " (reused)" : ""} ${when(row.mark.at)}`, row.mark.message || null,
        ), true);
      }
      const tries = row.attempts.length;
      const status = steps.get(name)?.status || row.mark?.status || "pending";
      row.element.dataset.status = status;
      const meta = tries > 1 ? `${status} · ${tries} attempts` : status;
      if (row.meta.textContent !== meta) row.meta.textContent = meta;
    }
    element.classList.toggle("tl-many-running", running > MANY_RUNNING);
  };

  const schedule = () => {
    if (frame === null) frame = requestAnimationFrame(render);
  };
  new ResizeObserver(() => {
    if (stale) schedule();
  }).observe(element);

  const update = (event, stepMap) => {
    steps = stepMap;
    if (!rows.size) for (const name of steps.keys()) rowOf(name);
    const at = Date.parse(event.ts);
    if (Number.isNaN(at)) return;
    if (run.first === null) run.first = at;
    run.last = Math.max(run.last, at);
    apply(event, at);
    schedule();
    if (run.end !== null) {
      clearInterval(ticker);
      ticker = null;
    } else if (ticker === null) {
      ticker = setInterval(() => {
        // The page went away (another view): stop drawing for nobody.
        if (!element.isConnected) {
          clearInterval(ticker);
          return;
        }
        schedule();
      }, TICK_MS);
    }
  };
  return { element, update };
}

function segment(cls) {
  return h("span", { class: `tl-seg ${cls}`, hidden: true });
}

function lines(...parts) {
  return parts.filter((p) => p !== null && p !== undefined && p !== "").join("\n");
}

/** Ticks at a round spacing, at most `most` of them, labelled in their unit. */
function drawAxis(axis, grid, span, most) {
  const step = TICK_STEPS.find((s) => span / s <= most) ?? Math.ceil(span / most / (24 * HOUR)) * 24 * HOUR;
  if (axis.dataset.step === String(step) && axis.dataset.span === String(span)) return;
  axis.dataset.step = String(step);
  axis.dataset.span = String(span);
  const ticks = [];
  const rules = [];
  for (let t = 0; t <= span; t += step) {
    const left = `${((t / span) * 100).toFixed(3)}%`;
    // The label nearest the right edge ends at its line instead of overflowing.
    const tick = h("span", { class: t / span > 0.9 ? "tl-tick tl-tick-end" : "tl-tick" }, t === 0 ? "0" : spell(t));
    const line = h("span", { class: "tl-gridline" });
    tick.style.left = left;
    line.style.left = left;
    ticks.push(tick);
    rules.push(line);
  }
  axis.replaceChildren(...ticks);
  grid.replaceChildren(...rules);
}

function legend() {
  const key = (cls, status, text) => {
    const swatch = h("span", { class: `tl-seg ${cls}` });
    if (status) swatch.dataset.status = status;
    return h("span", { class: "tl-key" }, swatch, text);
  };
  return h(
    "div",
    { class: "tl-legend muted" },
    key("tl-wait", null, "waiting to start"),
    key("tl-bar", "running", "running"),
    key("tl-bar", "succeeded", "succeeded"),
    key("tl-bar", "failed", "failed"),
    key("tl-bar", "retried", "failed, retried"),
    key("tl-backoff", null, "retry backoff"),
    key("tl-bar", "lost", "lost with its worker"),
    key("tl-bar", "cancelled", "cancelled"),
    key("tl-mark", "skipped", "never started"),
  );
}
