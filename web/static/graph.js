// A run's steps drawn as a graph: boxes in columns by dependency depth, arrows for needs.

import { formatDuration, h, svg } from "./dom.js";

const BOX_W = 170;
const BOX_H = 74;
const GAP_X = 60;
const GAP_Y = 18;
const PAD = 12;

/**
 * Draw the snapshot's steps into `container`; `steps` maps each name to the page's step
 * object (`{name, tool, needs, status, attempt, progress, note, ...}`), which gains `box`.
 * Returns `draw(step)`, which redraws one step from its object.
 */
export function drawGraph(container, steps, onSelect) {
  const columns = layout([...steps.values()]);
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
  container.style.width = `${width}px`;
  container.style.height = `${height}px`;
  container.replaceChildren(arrows);
  const place = new Map();
  columns.forEach((column, col) =>
    column.forEach((step, row) => {
      const x = PAD + col * (BOX_W + GAP_X);
      const y = PAD + row * (BOX_H + GAP_Y);
      place.set(step.name, { x, y });
      step.box = h(
        "button",
        { type: "button", class: "step", "data-step": step.name },
        h("span", { class: "name" }, step.name),
        h("span", { class: "meta" }, step.tool),
        h("span", { class: "bar" }, h("span", { class: "fill" })),
        h("span", { class: "note" }),
      );
      // Through the CSSOM: the CSP (style-src 'self') refuses style attributes.
      Object.assign(step.box.style, { left: `${x}px`, top: `${y}px` });
      step.box.addEventListener("click", () => onSelect(step));
      container.append(step.box);
      drawStep(step);
    }),
  );
  for (const step of steps.values()) {
    const to = place.get(step.name);
    for (const need of step.needs) {
      const from = place.get(need);
      if (!from) continue;
      const x1 = from.x + BOX_W;
      const y1 = from.y + BOX_H / 2;
      const x2 = to.x;
      const y2 = to.y + BOX_H / 2;
      const mid = (x1 + x2) / 2;
      arrows.append(svg("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 2},${y2}`, "marker-end": "url(#head)" }));
    }
  }
  return drawStep;
}

/** Redraw one step's box from its object. */
function drawStep(step) {
  const box = step.box;
  if (!box) return;
  box.dataset.status = step.status;
  box.dataset.attempt = step.attempt;
  const parts = [step.tool];
  if (step.attempt > 1) parts.push(`attempt ${step.attempt}`);
  if (step.durationMs !== null && step.durationMs !== undefined) parts.push(formatDuration(step.durationMs));
  else if (step.status === "running") parts.push(formatDuration(Date.now() - step.started));
  box.querySelector(".meta").textContent = parts.join(" · ");
  box.querySelector(".fill").style.width = `${Math.round((step.progress || 0) * 100)}%`;
  box.querySelector(".note").textContent = step.note || step.status;
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
