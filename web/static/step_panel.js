// The panel of one step: its status, input, output and logs.

import { api } from "./api.js";
import { badge, h } from "./dom.js";

/** `show(step)` fills `aside` with the step's details; `hide()` closes it. */
export function createStepPanel(aside, runId, onClose) {
  const hide = () => {
    aside.hidden = true;
    onClose();
  };
  const show = async (step) => {
    aside.hidden = false;
    const json = (value) => h("pre", {}, JSON.stringify(value, null, 2));
    let output = step.output;
    if (step.truncated) {
      // Big outputs are left out of events; the snapshot keeps them.
      const snapshot = await api(`/api/runs/${encodeURIComponent(runId)}`);
      output = snapshot.steps.find((s) => s.name === step.name)?.output;
    }
    const parts = [
      h("button", { type: "button", class: "close", "aria-label": "close", onclick: hide }, "×"),
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
    aside.replaceChildren(...parts.filter(Boolean));
  };
  return { show, hide };
}
