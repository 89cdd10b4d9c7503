// The runs list: every run, newest first, fifty to a page, filtered by status and
// scenario and searched by the start of a run id.
//
// The hash names everything the list shows (`#runs?status=failed&scenario_id=x&q=1a2b
// &before=<run id>`): a reload or a shared link opens the same list, and back and
// forward step through what was looked at. Every control changes the hash; the router
// then builds the page again from it.
//
// Pages are "← Newer" and "Older →" links, not "Load more": a page is held by its
// cursor, so runs started meanwhile do not push the rows being read down (page 1 shows
// them as they come; older pages count them in a notice instead), only one page of
// rows is fetched again every two seconds however far one has gone, and each page is a
// link that can be kept, shared or opened in another tab.

import { ApiError, api } from "./api.js";
import { RUN_STATUSES, alertLine, badge, every, formatDuration, formatTime, h, plural, runDuration } from "./dom.js";

export const PAGE_SIZE = 50;
const FILTERS = ["status", "scenario_id", "q"];
const WHOLE_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ID_SHAPE = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
const MIN_PREFIX = 4;
// Per tab (sessionStorage): the cursor of the page before each page reached by "Older",
// and the newest run when page 1 was left, from which newer runs are counted.
const NEWER_KEY = (filters, before) => `stepstream.runs.newer.${filters}.${before}`;
const ANCHOR_KEY = (filters) => `stepstream.runs.anchor.${filters}`;

/** The list's state as a hash names it. */
export function readHash(hash = location.hash) {
  const query = new URLSearchParams(hash.slice(hash.indexOf("?") + 1 || hash.length));
  const state = { before: query.get("before") || "" };
  for (const key of FILTERS) state[key] = query.get(key) || "";
  return state;
}

/** The hash of a state: `#runs`, or `#runs?` with the parts that are set. */
export function hashOf(state) {
  const query = new URLSearchParams();
  for (const key of [...FILTERS, "before"]) if (state[key]) query.set(key, state[key]);
  const text = query.toString();
  return text ? `#runs?${text}` : "#runs";
}

/** Whether `text` (lower case) is a run id or at least its first four characters. */
export function isIdStart(text) {
  if (text.length < MIN_PREFIX || text.length > ID_SHAPE.length) return false;
  return [...text].every((c, i) => (ID_SHAPE[i] === "-" ? c === "-" : /[0-9a-f]/.test(c)));
}

/** "No failed runs of hello_sequence whose id starts with 1a2b." */
export function nothingFound(state) {
  if (state.before) return "No older runs.";
  if (!state.status && !state.scenario_id && !state.q) return "No runs yet.";
  const of = state.scenario_id ? ` of ${state.scenario_id}` : "";
  const id = state.q ? ` whose id starts with ${state.q}` : "";
  return `No ${state.status ? `${state.status} ` : ""}runs${of}${id}.`;
}

export function runsPage(view) {
  const state = readHash();
  const filters = hashOf({ ...state, before: "" });
  const go = (changes) => {
    const next = hashOf({ ...state, before: "", ...changes });
    if (next !== hashOf(state)) location.hash = next;
  };

  const status = h(
    "select",
    { id: "filter-status", "aria-label": "status", onchange: () => go({ status: status.value }) },
    h("option", { value: "" }, "any status"),
    RUN_STATUSES.map((s) => h("option", { value: s }, s)),
  );
  status.value = state.status;
  const scenario = h(
    "select",
    { id: "filter-scenario", "aria-label": "scenario", onchange: () => go({ scenario_id: scenario.value }) },
    h("option", { value: "" }, "any scenario"),
    // Chosen before the list of scenarios arrives (and kept if it names none).
    state.scenario_id && h("option", { value: state.scenario_id }, state.scenario_id),
  );
  scenario.value = state.scenario_id;
  const search = h("input", {
    id: "run-search",
    type: "search",
    name: "q",
    value: state.q,
    placeholder: "run id, or its first characters",
    "aria-label": "run id",
    autocomplete: "off",
    spellcheck: "false",
    oninput: () => (searchError.textContent = ""),
  });
  const searchError = h("span", { id: "run-search-error", class: "field-error", role: "alert" });
  const find = (event) => {
    event.preventDefault();
    const text = search.value.trim().toLowerCase();
    if (WHOLE_ID.test(text)) {
      location.assign(`/runs/${text}`);
    } else if (!text || isIdStart(text)) {
      go({ q: text });
    } else {
      searchError.textContent = `Type a run id, or at least its first ${MIN_PREFIX} characters (0–9, a–f).`;
    }
  };
  const searchForm = h(
    "form",
    { class: "run-search", role: "search", onsubmit: find },
    search,
    h("button", { type: "submit" }, "Find"),
  );

  const rows = h("tbody");
  const [alert, showError] = alertLine();
  const newerCount = h("p", { id: "runs-new", class: "runs-new", hidden: true });
  const newerLink = h("a", { id: "runs-newer", rel: "prev", hidden: true }, "← Newer");
  const olderLink = h("a", { id: "runs-older", rel: "next", hidden: true }, "Older →");
  const range = h("span", { id: "runs-range", class: "muted" });
  view.append(
    h(
      "section",
      { class: "runs" },
      h("h1", {}, "Runs"),
      h(
        "div",
        { class: "filters" },
        status,
        scenario,
        searchForm,
        h("a", { href: "/#scenarios" }, "Start a run…"),
      ),
      searchError,
      alert,
      newerCount,
      h(
        "table",
        { id: "runs-table" },
        h(
          "thead",
          {},
          h("tr", {}, ["Run", "Scenario", "Status", "Started", "Duration", "Message"].map((t) => h("th", {}, t))),
        ),
        rows,
      ),
      h("nav", { class: "pager", "aria-label": "pages" }, newerLink, range, olderLink),
    ),
  );
  api("/api/scenarios")
    .then((list) => {
      const ids = list.map((s) => s.scenario_id);
      if (state.scenario_id && !ids.includes(state.scenario_id)) ids.push(state.scenario_id);
      scenario.replaceChildren(scenario.options[0], ...ids.map((id) => h("option", { value: id }, id)));
      scenario.value = state.scenario_id;
    })
    .catch(showError);

  // Where "← Newer" leads: the page this one was reached from by "Older", else page 1.
  const trail = state.before ? JSON.parse(sessionStorage.getItem(NEWER_KEY(filters, state.before)) || "null") : null;
  const pageNumber = trail ? trail.page + 1 : state.before ? null : 1;
  newerLink.hidden = !state.before;
  newerLink.href = hashOf({ ...state, before: trail ? trail.before : "" });
  if (state.before && !trail) newerLink.textContent = "← Newest";

  const table = new RunRows(rows);
  let nextBefore = null;
  olderLink.addEventListener("click", () => {
    // Remembered for the way back; the link itself does the navigating.
    sessionStorage.setItem(NEWER_KEY(filters, nextBefore), JSON.stringify({ before: state.before, page: pageNumber || 1 }));
    if (!state.before && table.newest) sessionStorage.setItem(ANCHOR_KEY(filters), JSON.stringify(table.newest));
  });

  const listQuery = (before) => {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (state.status) query.set("status", state.status);
    if (state.scenario_id) query.set("scenario_id", state.scenario_id);
    if (state.q) query.set("run_id", state.q);
    if (before) query.set("before", before);
    return `/api/runs?${query}`;
  };

  const refresh = async () => {
    let page;
    try {
      page = await api(listQuery(state.before));
    } catch (error) {
      // A filter or cursor the API refuses (an edited or outdated link): say so in the
      // list, with the way out, rather than retry it every two seconds in vain.
      if (!(error instanceof ApiError) || error.status !== 400) throw error;
      stopPolling();
      table.empty(error.message, state, filters);
      return;
    }
    table.show(page.runs, state, filters);
    nextBefore = page.next_before;
    olderLink.hidden = !nextBefore;
    if (nextBefore) olderLink.href = hashOf({ ...state, before: nextBefore });
    range.textContent = rangeText(pageNumber, page.runs.length, state.before);
    if (state.before) await countNewer();
  };

  // On an older page: how many runs came in at the top since page 1 was left.
  const countNewer = async () => {
    const top = (await api(listQuery(""))).runs;
    let anchor = JSON.parse(sessionStorage.getItem(ANCHOR_KEY(filters)) || "null");
    if (!anchor && top.length) {
      anchor = { run_id: top[0].run_id, created_at: top[0].created_at };
      sessionStorage.setItem(ANCHOR_KEY(filters), JSON.stringify(anchor));
    }
    const newer = anchor ? top.filter((run) => run.run_id !== anchor.run_id && run.created_at > anchor.created_at) : [];
    newerCount.hidden = !newer.length;
    const count = newer.length === top.length && top.length === PAGE_SIZE ? `${PAGE_SIZE}+ newer runs` : plural(newer.length, "newer run");
    newerCount.replaceChildren(
      `${count} since you left the first page. `,
      h("a", { href: filters, id: "runs-new-link" }, "Show the newest"),
    );
  };

  let stopPolling = () => {};
  stopPolling = every(2000, refresh, showError);
  return () => stopPolling();
}

function rangeText(pageNumber, count, before) {
  if (!count) return "";
  if (!pageNumber) return before ? "older runs" : "";
  const first = (pageNumber - 1) * PAGE_SIZE + 1;
  return `runs ${first}–${first + count - 1}`;
}

/** The table's rows, one per run, kept from one refresh to the next and updated in
 * place, so that a tooltip or a selection survives the refresh. */
class RunRows {
  constructor(body) {
    this.body = body;
    this.rows = new Map();
    this.newest = null;
  }

  show(runs, state, filters) {
    if (!runs.length) {
      this.empty(nothingFound(state), state, filters);
      return;
    }
    if (!state.before) this.newest = { run_id: runs[0].run_id, created_at: runs[0].created_at };
    const rows = new Map();
    for (const run of runs) rows.set(run.run_id, this.update(this.rows.get(run.run_id) || this.create(run), run));
    this.rows = rows;
    this.body.replaceChildren(...[...rows.values()].map((row) => row.tr));
  }

  empty(text, state, filters) {
    this.rows = new Map();
    const filtered = state.status || state.scenario_id || state.q;
    const cell = h(
      "td",
      { colspan: 6, class: "empty" },
      h("span", { class: "muted" }, text),
      state.before && [" ", h("a", { href: filters, id: "runs-newest" }, "Newest runs")],
      filtered && [" ", h("a", { href: "#runs", id: "clear-filters" }, "clear filters")],
      !filtered && !state.before && [" ", h("a", { href: "/#scenarios" }, "Start a run…")],
    );
    this.body.replaceChildren(h("tr", { class: "empty" }, cell));
  }

  create(run) {
    const row = {
      tr: h("tr", { "data-run": run.run_id }),
      scenario: h("td", {}),
      status: h("td", {}),
      started: h("td", {}),
      duration: h("td", { class: "duration" }),
      message: h("td", { class: "message" }),
    };
    const id = h("td", { class: "run-id" }, h("a", { href: `/runs/${run.run_id}`, title: run.run_id }, run.run_id.slice(0, 8)));
    row.tr.append(id, row.scenario, row.status, row.started, row.duration, row.message);
    return row;
  }

  update(row, run) {
    setText(row.scenario, run.scenario_id);
    if (row.shownStatus !== run.status) {
      row.shownStatus = run.status;
      row.status.replaceChildren(badge(run.status));
    }
    setText(row.started, formatTime(run.started_at || run.created_at));
    setText(row.duration, formatDuration(runDuration(run)));
    const message = run.message || "";
    setText(row.message, message);
    // The cell shows one line, cut short; the tooltip has all of it.
    if (message) row.message.title = message;
    else row.message.removeAttribute("title");
    return row;
  }
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}
