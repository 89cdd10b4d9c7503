// stepstream's browser UI: runs, scenarios with their input forms, a run's step graph
// followed live over the WebSocket, and the worker registry. Plain DOM, no build step,
// nothing fetched from outside the server.

const view = document.getElementById("view");
const TOKEN_KEY = "stepstream.token";
// A run's own read-only token (stream_token), kept for the tab by the form that started it.
const RUN_TOKEN_KEY = (runId) => `stepstream.run-token.${runId}`;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const RUN_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];

// ---------------------------------------------------------------- talking to the API

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/** fetch() with the tab's token; asks for a token when the server answers 401. */
async function api(path, { method = "GET", json } = {}) {
  for (;;) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    if (json !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: json === undefined ? undefined : JSON.stringify(json),
    });
    if (response.status === 401) {
      await askForToken(token ? "That token was refused; try again." : "");
      continue;
    }
    const isJson = (response.headers.get("content-type") || "").includes("json");
    const body = isJson ? await response.json() : await response.text();
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }
}

let tokenPrompt = null;

/** Show the token dialog once, however many requests are waiting for it. */
function askForToken(problem) {
  if (tokenPrompt) return tokenPrompt;
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  document.getElementById("token-error").textContent = problem;
  input.value = "";
  tokenPrompt = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        sessionStorage.setItem(TOKEN_KEY, input.value.trim());
        tokenPrompt = null;
        resolve();
      },
      { once: true },
    );
  });
  dialog.showModal();
  return tokenPrompt;
}

// ---------------------------------------------------------------- small helpers

/** Build an element: h("a", {href: "/"}, "text", child, ...). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

function svg(tag, attrs = {}) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttrs(el, attrs);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

/** "1 step", "2 steps". */
function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

function badge(status) {
  return h("span", { class: `badge status-${status}`, "data-status": status }, status);
}

function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(ms / 60000);
  return `${minutes} min ${Math.round((ms % 60000) / 1000)} s`;
}

function runDuration(run) {
  if (!run.started_at) return null;
  const end = run.finished_at ? Date.parse(run.finished_at) : Date.now();
  return end - Date.parse(run.started_at);
}

function errorText(error) {
  if (error instanceof ApiError) return `${error.status}: ${error.message}`;
  return `cannot reach the server (${error.message})`;
}

/** Call `fn` now and then every `ms` until the returned stop function is called. */
function every(ms, fn, onError) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    try {
      await fn();
      onError(null);
    } catch (error) {
      onError(error);
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function alertLine() {
  const line = h("p", { class: "error", role: "alert" });
  return [line, (error) => (line.textContent = error ? errorText(error) : "")];
}

// ---------------------------------------------------------------- pages

let stopPage = () => {};

function route() {
  stopPage();
  const match = location.pathname.match(/^\/runs\/([^/]+)\/?$/);
  const tab = match ? "runs" : location.hash.slice(1) || "runs";
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.tab === tab);
  }
  view.replaceChildren();
  document.title = match ? "run · stepstream" : `${tab[0].toUpperCase()}${tab.slice(1)} · stepstream`;
  const pages = { runs: runsPage, scenarios: scenariosPage, workers: workersPage };
  stopPage = (match ? runPage(decodeURIComponent(match[1])) : (pages[tab] || runsPage)()) || (() => {});
}

window.addEventListener("hashchange", route);
window.addEventListener("popstate", route);

// -- runs

function runsPage() {
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

// -- scenarios and their forms

function scenariosPage() {
  const [alert, showError] = alertLine();
  const section = h("section", { class: "scenarios" }, h("h1", {}, "Scenarios"), alert);
  view.append(section);
  const problems = h("div", { class: "problems-slot" });
  section.append(problems);
  api("/api/scenarios")
    .then((list) => {
      for (const scenario of list) section.append(scenarioCard(scenario));
      if (!list.length) section.append(h("p", { class: "muted" }, "No scenarios are loaded."));
    })
    .catch(showError);
  // Files left out are shown where people look for their scenario, not only in a log.
  api("/api/scenarios/problems")
    .then((list) => {
      if (list.length) problems.replaceWith(problemsPanel(list));
    })
    .catch(showError);
}

function problemsPanel(list) {
  const files = list.length === 1 ? "1 scenario file was" : `${list.length} scenario files were`;
  return h(
    "section",
    { class: "problems", role: "region", "aria-label": "Problems" },
    h("h2", {}, "Problems"),
    h("p", {}, `${files} left out; fix and save, and they load within a second.`),
    h(
      "ul",
      {},
      list.map((problem) =>
        h(
          "li",
          { "data-path": problem.path },
          h("code", {}, problem.path),
          problem.scenario_id ? h("span", { class: "muted" }, ` (${problem.scenario_id})`) : "",
          h("div", { class: "reason" }, problem.reason),
        ),
      ),
    ),
  );
}

let fieldIds = 0;

function scenarioCard(scenario) {
  const schema = scenario.input_schema || {};
  const required = new Set(schema.required || []);
  const fields = Object.entries(schema.properties || {}).map(([name, prop]) =>
    inputField(name, prop || {}, required.has(name)),
  );
  const formError = h("p", { class: "error", role: "alert" });
  const form = h(
    "form",
    { class: "scenario-form", "data-scenario": scenario.scenario_id, novalidate: true },
    fields.map((f) => f.row),
    formError,
    h("button", { type: "submit" }, "Start run"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.textContent = "";
    const input = {};
    let valid = true;
    for (const f of fields) {
      f.error.textContent = "";
      try {
        const value = f.read();
        if (value !== undefined) input[f.name] = value;
      } catch (problem) {
        f.error.textContent = problem.message;
        valid = false;
      }
    }
    if (!valid) return;
    try {
      const run = await api("/api/runs", { method: "POST", json: { scenario_id: scenario.scenario_id, input } });
      if (run.stream_token) sessionStorage.setItem(RUN_TOKEN_KEY(run.run_id), run.stream_token);
      location.assign(`/runs/${run.run_id}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 422) showFieldErrors(error, fields, formError);
      else formError.textContent = errorText(error);
    }
  });
  return h(
    "article",
    { class: "card", id: `scenario-${scenario.scenario_id}` },
    h("h2", {}, scenario.name),
    h("p", { class: "muted" }, `${scenario.scenario_id} · ${plural(scenario.step_count, "step")}`),
    scenario.description ? h("p", {}, scenario.description) : null,
    form,
  );
}

/** One form field for a property of an input schema, with a reader that validates. */
function inputField(name, prop, required) {
  const id = `field-${++fieldIds}`;
  const types = Array.isArray(prop.type) ? prop.type : [prop.type];
  const type = types.find((t) => t && t !== "null");
  const missing = () => {
    if (required) throw new Error("required");
    return undefined;
  };
  let control;
  let read;
  if (Array.isArray(prop.enum)) {
    const options = prop.enum.map((v) =>
      h("option", { value: JSON.stringify(v), selected: JSON.stringify(v) === JSON.stringify(prop.default) }, String(v)),
    );
    control = h("select", { id, name }, required ? null : h("option", { value: "" }, ""), options);
    read = () => (control.value === "" ? missing() : JSON.parse(control.value));
  } else if (type === "boolean") {
    control = h("input", { id, name, type: "checkbox", checked: prop.default === true });
    read = () => control.checked;
  } else if (type === "integer" || type === "number") {
    control = h("input", {
      id, name, type: "number", step: type === "integer" ? "1" : "any",
      value: prop.default ?? "", min: prop.minimum, max: prop.maximum,
    });
    read = () => {
      const raw = control.value.trim();
      if (raw === "") return missing();
      const n = Number(raw);
      if (!Number.isFinite(n)) throw new Error("must be a number");
      if (type === "integer" && !Number.isInteger(n)) throw new Error("must be a whole number");
      if (prop.minimum !== undefined && n < prop.minimum) throw new Error(`must be at least ${prop.minimum}`);
      if (prop.maximum !== undefined && n > prop.maximum) throw new Error(`must be at most ${prop.maximum}`);
      return n;
    };
  } else if (type === "string") {
    control = h("input", { id, name, type: "text", value: prop.default ?? "" });
    read = () => {
      const value = control.value;
      if (value === "") return missing();
      if (prop.minLength !== undefined && value.length < prop.minLength)
        throw new Error(`must be at least ${prop.minLength} characters`);
      if (prop.maxLength !== undefined && value.length > prop.maxLength)
        throw new Error(`must be at most ${prop.maxLength} characters`);
      if (prop.pattern && !new RegExp(prop.pattern, "u").test(value)) throw new Error(`must match ${prop.pattern}`);
      return value;
    };
  } else {
    // Objects, arrays and anything else: JSON, checked in full by the API.
    const initial = prop.default === undefined ? "" : JSON.stringify(prop.default, null, 2);
    control = h("textarea", { id, name, rows: 3, placeholder: type === "array" ? "[ ]" : "JSON" }, initial);
    read = () => {
      const raw = control.value.trim();
      if (raw === "") return missing();
      let value;
      try {
        value = JSON.parse(raw);
      } catch {
        throw new Error("must be JSON");
      }
      if (type === "array" && !Array.isArray(value)) throw new Error("must be a JSON array");
      if (type === "object" && (value === null || typeof value !== "object" || Array.isArray(value)))
        throw new Error("must be a JSON object");
      return value;
    };
  }
  const error = h("span", { class: "field-error", "data-field": name });
  const label = h(
    "label",
    { for: id },
    name,
    required ? h("span", { class: "required", title: "required" }, " *") : null,
    type ? h("span", { class: "muted" }, ` ${type}`) : null,
  );
  const help = prop.description ? h("small", { class: "muted" }, prop.description) : null;
  const row = h("div", { class: "field" }, label, control, help, error);
  return { name, row, read, error };
}

/** The top-level property a JSON path (`$.items[0]`, `$['a b']`) is about. */
function topField(path) {
  const match = /^\$(?:\.([^.[]+)|\[(?:'([^']*)'|"([^"]*)")\])/.exec(path);
  return match ? (match[1] ?? match[2] ?? match[3]) : undefined;
}

/** Put the API's 422 details next to the fields they are about. */
function showFieldErrors(error, fields, formError) {
  const details = error.body?.error?.details || [];
  const rest = [];
  for (const detail of details) {
    let name = topField(detail.path || "");
    if (!name) name = /^'([^']+)' is a required property/.exec(detail.message)?.[1];
    const field = fields.find((f) => f.name === name);
    if (field) field.error.textContent = detail.message;
    else rest.push(`${detail.path || "input"}: ${detail.message}`);
  }
  formError.textContent = rest.length || !details.length ? [errorText(error), ...rest].join("; ") : "";
}

// -- one run, live

const BOX_W = 170;
const BOX_H = 74;
const GAP_X = 60;
const GAP_Y = 18;
const PAD = 12;

function runPage(runId) {
  const state = {
    steps: new Map(),
    lastSeq: 0,
    lastId: null,
    status: null,
    finished: false,
    socket: null,
    stopped: false,
    pause: 250,
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
  const log = h("ol", { id: "event-log", class: "event-log" });
  const title = h("h1", {}, "Run ", h("code", {}, runId));
  view.append(
    h(
      "section",
      { class: "run" },
      h("div", { class: "run-head" }, title, statusBadge, connection, cancel),
      message,
      alert,
      h("div", { class: "run-body" }, graph, detail),
      h("h2", {}, "Events"),
      log,
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
      if (state.selected === step) drawDetail(step);
    }
    appendEvent(event);
  };

  const appendEvent = (event) => {
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const what = [event.step, event.status, event.message, event.progress !== undefined ? `${Math.round(event.progress * 100)}%` : null]
      .filter((x) => x !== undefined && x !== null && x !== "")
      .join(" · ");
    log.append(
      h(
        "li",
        { "data-seq": event.seq, "data-type": event.type },
        h("time", {}, new Date(event.ts).toLocaleTimeString()),
        h("b", {}, event.type),
        what,
      ),
    );
    if (atBottom) log.scrollTop = log.scrollHeight;
  };

  const drawStep = (step) => {
    const box = step.box;
    box.dataset.status = step.status;
    box.dataset.attempt = step.attempt;
    const parts = [step.tool];
    if (step.attempt > 1) parts.push(`attempt ${step.attempt}`);
    if (step.durationMs !== null && step.durationMs !== undefined) parts.push(formatDuration(step.durationMs));
    else if (step.status === "running") parts.push(formatDuration(Date.now() - step.started));
    box.querySelector(".meta").textContent = parts.join(" · ");
    box.querySelector(".fill").style.width = `${Math.round((step.progress || 0) * 100)}%`;
    box.querySelector(".note").textContent = step.note || step.status;
  };

  const drawDetail = async (step) => {
    detail.hidden = false;
    const json = (value) => h("pre", {}, JSON.stringify(value, null, 2));
    let output = step.output;
    if (step.truncated) {
      // Big outputs are left out of events; the snapshot keeps them.
      const snapshot = await api(`/api/runs/${encodeURIComponent(runId)}`);
      output = snapshot.steps.find((s) => s.name === step.name)?.output;
    }
    const parts = [
      h("button", { type: "button", class: "close", "aria-label": "close", onclick: () => { detail.hidden = true; state.selected = null; } }, "×"),
      h("h2", {}, step.name),
      h("p", {}, badge(step.status), ` ${step.tool} · attempt ${step.attempt || 0}`),
      step.message ? h("p", { class: "step-message" }, step.message) : null,
      h("h3", {}, "Input"),
      json(step.input),
      h("h3", {}, "Output"),
      output === undefined ? h("p", { class: "muted" }, "none yet") : json(output),
      h("h3", {}, "Logs"),
      step.logs.length ? h("pre", { class: "logs" }, step.logs.join("\n")) : h("p", { class: "muted" }, "none"),
    ];
    detail.replaceChildren(...parts.filter(Boolean));
  };

  const build = (snapshot) => {
    title.append(" ", h("span", { class: "muted" }, snapshot.scenario_id));
    const columns = layout(snapshot.steps);
    const width = PAD * 2 + columns.length * BOX_W + (columns.length - 1) * GAP_X;
    const height = PAD * 2 + Math.max(...columns.map((c) => c.length)) * (BOX_H + GAP_Y) - GAP_Y;
    const arrows = svg("svg", { class: "arrows", width, height, "aria-hidden": "true" });
    const marker = svg("marker", {
      id: "head", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto",
    });
    marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z" }));
    const defs = svg("defs");
    defs.append(marker);
    arrows.append(defs);
    graph.style.width = `${width}px`;
    graph.style.height = `${height}px`;
    graph.replaceChildren(arrows);
    columns.forEach((column, col) =>
      column.forEach((s, row) => {
        const step = {
          name: s.name, tool: s.tool, needs: s.needs || [], input: s.input, status: "pending",
          attempt: 0, progress: 0, note: "", logs: [], x: PAD + col * (BOX_W + GAP_X),
          y: PAD + row * (BOX_H + GAP_Y),
        };
        step.box = h(
          "button",
          { type: "button", class: "step", "data-step": s.name },
          h("span", { class: "name" }, s.name),
          h("span", { class: "meta" }, s.tool),
          h("span", { class: "bar" }, h("span", { class: "fill" })),
          h("span", { class: "note" }),
        );
        // Through the CSSOM: the CSP (style-src 'self') refuses style attributes.
        Object.assign(step.box.style, { left: `${step.x}px`, top: `${step.y}px` });
        step.box.addEventListener("click", () => {
          state.selected = step;
          drawDetail(step).catch(showError);
        });
        state.steps.set(s.name, step);
        graph.append(step.box);
        drawStep(step);
      }),
    );
    for (const step of state.steps.values()) {
      for (const need of step.needs) {
        const from = state.steps.get(need);
        if (!from) continue;
        const x1 = from.x + BOX_W;
        const y1 = from.y + BOX_H / 2;
        const x2 = step.x;
        const y2 = step.y + BOX_H / 2;
        const mid = (x1 + x2) / 2;
        arrows.append(svg("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 2},${y2}`, "marker-end": "url(#head)" }));
      }
    }
    // The run's status comes from its events, replayed from the start, so that the
    // page never shows an end before the steps that led to it.
  };

  const connect = () => {
    if (state.stopped) return;
    const query = new URLSearchParams();
    if (state.lastId) query.set("after", state.lastId);
    // The run's own token when this tab started the run: the API token stays out of URLs.
    const runToken = sessionStorage.getItem(RUN_TOKEN_KEY(runId));
    const token = runToken || sessionStorage.getItem(TOKEN_KEY);
    if (token) query.set("access_token", token);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/api/runs/${encodeURIComponent(runId)}/ws?${query}`);
    state.socket = socket;
    let opened = false;
    socket.addEventListener("close", () => {
      // Refused before it opened (expired): the next attempt uses the API token.
      if (runToken && !opened) sessionStorage.removeItem(RUN_TOKEN_KEY(runId));
    });
    socket.addEventListener("open", () => {
      opened = true;
      setConnection("live", "live");
      state.pause = 250;
    });
    socket.addEventListener("message", (message) => apply(JSON.parse(message.data)));
    socket.addEventListener("close", () => {
      if (state.stopped || state.socket !== socket) return;
      if (state.finished) {
        setConnection("finished", "finished");
        return;
      }
      setConnection("reconnecting", "reconnecting…");
      setTimeout(connect, state.pause);
      state.pause = Math.min(state.pause * 2, 5000);
    });
  };

  // Running steps show their elapsed time.
  const ticker = setInterval(() => {
    for (const step of state.steps.values()) if (step.status === "running") drawStep(step);
  }, 1000);

  api(`/api/runs/${encodeURIComponent(runId)}`)
    .then((snapshot) => {
      build(snapshot);
      connect();
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
    if (state.socket) state.socket.close();
  };
}

/** Columns of steps, left to right: a step sits one column right of its last need. */
function layout(steps) {
  const byName = new Map(steps.map((s) => [s.name, s]));
  const depth = new Map();
  const depthOf = (name, seen = new Set()) => {
    if (depth.has(name)) return depth.get(name);
    const needs = (byName.get(name)?.needs || []).filter((n) => byName.has(n) && !seen.has(n));
    seen.add(name);
    const d = needs.length ? 1 + Math.max(...needs.map((n) => depthOf(n, seen))) : 0;
    depth.set(name, d);
    return d;
  };
  const columns = [];
  for (const step of steps) {
    const d = depthOf(step.name);
    (columns[d] ||= []).push(step);
  }
  return columns.filter(Boolean);
}

// -- workers

function workersPage() {
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

route();
