// Scenarios with their input forms, and the files left out (Problems).

import { ApiError, RUN_TOKEN_KEY, api } from "./api.js";
import { alertLine, errorText, h, plural } from "./dom.js";

export function scenariosPage(view) {
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

// The form's own checks say what tasks/input_messages.py says for the same rule (the
// API's 422 messages, less the field's name, which the label shows): change both together.

/** Python's `str.isspace`, which the API's blank check uses (JavaScript's `\s` differs). */
const BLANK = /^[\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/u;

function firstLine(text) {
  if (typeof text !== "string" || !text.trim()) return undefined;
  return text.trim().split(/\r?\n/)[0].replace(/\.+$/, "");
}

/** What a string failing `prop.pattern` must be (input_messages.pattern_phrase). */
function patternPhrase(prop) {
  const description = firstLine(prop.description);
  for (const text of [description, firstLine(prop.title)]) {
    if (text && text.toLowerCase().startsWith("must ")) return `must ${text.slice(5)}`;
  }
  return `is not in the expected format (${description ?? `pattern ${prop.pattern}`})`;
}

function characters(n) {
  return `${n} character${n === 1 ? "" : "s"}`;
}

/** One form field for a property of an input schema, with a reader that validates. */
function inputField(name, prop, required) {
  const id = `field-${++fieldIds}`;
  const types = Array.isArray(prop.type) ? prop.type : [prop.type];
  const type = types.find((t) => t && t !== "null");
  const missing = () => {
    if (required) throw new Error("is required");
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
      if (prop.exclusiveMinimum !== undefined && n <= prop.exclusiveMinimum)
        throw new Error(`must be more than ${prop.exclusiveMinimum}`);
      if (prop.exclusiveMaximum !== undefined && n >= prop.exclusiveMaximum)
        throw new Error(`must be less than ${prop.exclusiveMaximum}`);
      return n;
    };
  } else if (type === "string") {
    control = h("input", { id, name, type: "text", value: prop.default ?? "" });
    read = () => {
      const value = control.value;
      if (value === "") return missing();
      // Only a required field refuses blanks; an optional one sends what was typed.
      if (required && BLANK.test(value)) throw new Error("must not be blank");
      // Code points, as the API counts them.
      const length = [...value].length;
      if (prop.minLength !== undefined && length < prop.minLength)
        throw new Error(prop.minLength === 1 ? "must not be empty" : `must be at least ${characters(prop.minLength)}`);
      if (prop.maxLength !== undefined && length > prop.maxLength)
        throw new Error(`must be at most ${characters(prop.maxLength)}`);
      const pattern = prop.pattern && browserRegExp(prop.pattern);
      if (pattern && !pattern.test(value)) throw new Error(patternPhrase(prop));
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
      if (type === "array" && !Array.isArray(value)) throw new Error("must be a list");
      if (type === "object" && (value === null || typeof value !== "object" || Array.isArray(value)))
        throw new Error("must be an object");
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
    const name = topField(detail.path || "");
    const field = fields.find((f) => f.name === name);
    if (!field) {
      rest.push(detail.message || detail.path);
      continue;
    }
    // Next to its own field a message needs no "name: " (the label says it); about a
    // part of the field's value ("items[0].url: is required") it keeps where.
    const own = `${name}: `;
    const message = detail.message || "";
    field.error.textContent =
      detail.path === `$.${name}` && message.startsWith(own) ? message.slice(own.length) : message;
  }
  formError.textContent = rest.length || !details.length ? [errorText(error), ...rest].join("; ") : "";
}

/**
 * A schema's pattern as this browser reads it, or null when it cannot (Python's regex
 * dialect accepts some that JavaScript refuses, such as `\-` outside a class in
 * Unicode mode): the API checks those itself, and the form must not stay unsendable.
 */
function browserRegExp(pattern) {
  for (const flags of ["u", ""]) {
    try {
      return new RegExp(pattern, flags);
    } catch {
      // the next dialect, then none
    }
  }
  return null;
}
