// A run's steps drawn as a graph: boxes in columns by dependency depth, arrows for needs.
// A wide fan-out is drawn collapsed (a few boxes and one "+ N more" box that expands),
// and the graph is scaled down to the width it has, unless the reader asks for 100%.

import { formatDuration, h, svg } from "./dom.js";

const BOX_W = 170;
const BOX_H = 74;
const GAP_X = 60;
const GAP_Y = 18;
const PAD = 12;
// A column of more steps than this is drawn collapsed...
const COLLAPSE_OVER = 8;
// ...showing this many of them and one box standing for the rest.
const SHOWN = 5;
// Fitting never shrinks the graph below this: past it, the graph scrolls instead.
const MIN_SCALE = 0.4;
// "fit" or "full": kept for the tab, so the next run's graph opens the same way.
let zoom = "fit";

/**
 * Draw the snapshot's steps into `container`; `steps` maps each name to the page's step
 * object (`{name, tool, needs, status, attempt, progress, note, ...}`), which gains `box`
 * (none while its column is collapsed and it is not shown). Returns `draw(step)`, which
 * redraws one step from its object.
 */
export function drawGraph(container, steps, onSelect) {
  const columns = layout([...steps.values()]);
  const expanded = new Set();
  const canvas = h("div", { class: "graph-canvas" });
  const viewport = h("div", { class: "graph-viewport" }, canvas);
  const zoomButtons = {
    fit: h("button", { type: "button", class: "zoom", "data-zoom": "fit", title: "Scale the graph to the width of the page" }, "Fit"),
    full: h("button", { type: "button", class: "zoom", "data-zoom": "full", title: "Draw the graph at its real size" }, "100%"),
  };
  const scaleText = h("span", { class: "zoom-level muted", "aria-live": "polite" });
  const toolbar = h("div", { class: "graph-tools", role: "group", "aria-label": "Zoom" }, zoomButtons.fit, zoomButtons.full, scaleText);
  container.replaceChildren(toolbar, viewport);
  // Hidden steps of a collapsed column share the box that stands for them.
  const standIns = new Map();
  let size = { width: 0, height: 0 };

  const render = () => {
    standIns.clear();
    const shown = columns.map((column, col) => {
      if (column.length <= COLLAPSE_OVER) return column;
      if (expanded.has(col)) return [...column, { fewer: col }];
      return [...column.slice(0, SHOWN), { more: col, hidden: column.slice(SHOWN) }];
    });
    size = {
      width: PAD * 2 + shown.length * BOX_W + (shown.length - 1) * GAP_X,
      height: PAD * 2 + Math.max(...shown.map((c) => c.length)) * (BOX_H + GAP_Y) - GAP_Y,
    };
    const arrows = svg("svg", { class: "arrows", width: size.width, height: size.height, "aria-hidden": "true" });
    const marker = svg("marker", {
      id: "head", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto",
    });
    marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z" }));
    const defs = svg("defs");
    defs.append(marker);
    arrows.append(defs);
    canvas.replaceChildren(arrows);
    const place = new Map();
    shown.forEach((column, col) =>
      column.forEach((item, row) => {
        const x = PAD + col * (BOX_W + GAP_X);
        const y = PAD + row * (BOX_H + GAP_Y);
        let box;
        if (item.more !== undefined) {
          box = moreBox(item.hidden, () => {
            expanded.add(item.more);
            render();
            columnFocus(item.more, SHOWN);
          });
          const standIn = { box, steps: item.hidden };
          for (const step of item.hidden) {
            step.box = null;
            standIns.set(step.name, standIn);
            place.set(step.name, { x, y });
          }
          drawStandIn(standIn);
        } else if (item.fewer !== undefined) {
          box = h("button", { type: "button", class: "step fewer", "aria-expanded": "true" }, h("span", { class: "name" }, "Show fewer"));
          box.addEventListener("click", () => {
            expanded.delete(item.fewer);
            render();
            columnFocus(item.fewer, SHOWN);
          });
        } else {
          place.set(item.name, { x, y });
          box = item.box = stepBox(item);
          box.addEventListener("click", () => onSelect(item));
          drawStep(item);
        }
        box.dataset.column = col;
        // Through the CSSOM: the CSP (style-src 'self') refuses style attributes.
        Object.assign(box.style, { left: `${x}px`, top: `${y}px` });
        canvas.append(box);
      }),
    );
    const drawn = new Set();
    for (const step of steps.values()) {
      const to = place.get(step.name);
      for (const need of step.needs) {
        const from = place.get(need);
        if (!from || !to) continue;
        const key = `${from.x},${from.y},${to.x},${to.y}`;
        if (drawn.has(key)) continue; // the many edges of a collapsed column, drawn once
        drawn.add(key);
        const x1 = from.x + BOX_W;
        const y1 = from.y + BOX_H / 2;
        const x2 = to.x;
        const y2 = to.y + BOX_H / 2;
        const mid = (x1 + x2) / 2;
        arrows.append(svg("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 2},${y2}`, "marker-end": "url(#head)" }));
      }
    }
    fit();
  };

  // After an expand or collapse the button clicked is gone: keep the keyboard near it.
  const columnFocus = (col, row) => canvas.querySelectorAll(`[data-column="${col}"]`)[row]?.focus();

  const fit = () => {
    let scale = 1;
    if (zoom === "fit") scale = Math.max(MIN_SCALE, Math.min(1, availableWidth(container) / size.width));
    canvas.style.width = `${size.width}px`;
    canvas.style.height = `${size.height}px`;
    canvas.style.transform = scale === 1 ? "" : `scale(${scale})`;
    viewport.style.width = `${Math.ceil(size.width * scale)}px`;
    viewport.style.height = `${Math.ceil(size.height * scale)}px`;
    container.dataset.scale = scale.toFixed(3);
    scaleText.textContent = `${Math.round(scale * 100)}%`;
    for (const [mode, button] of Object.entries(zoomButtons)) button.setAttribute("aria-pressed", String(mode === zoom));
  };
  for (const [mode, button] of Object.entries(zoomButtons)) {
    button.addEventListener("click", () => {
      zoom = mode;
      fit();
    });
  }
  // The width changes with the window and with the step panel opening beside the graph.
  let pending = false;
  const resized = new ResizeObserver(() => {
    if (!container.isConnected) {
      resized.disconnect();
      return;
    }
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      fit();
    });
  });
  const body = container.closest(".run-body");
  for (const el of [body, body?.querySelector(".detail"), container.parentElement]) if (el) resized.observe(el);

  render();
  return (step) => {
    drawStep(step);
    const standIn = standIns.get(step.name);
    if (standIn && !step.box) drawStandIn(standIn);
  };
}

/** The width the graph may take: its row's, less the step panel when that sits beside it. */
function availableWidth(container) {
  const body = container.closest(".run-body") || container.parentElement;
  if (!body) return Infinity;
  let width = body.clientWidth;
  const detail = body.querySelector(".detail");
  if (detail && !detail.hidden) {
    const style = getComputedStyle(detail);
    if (style.position !== "fixed") {
      const px = (...names) => names.reduce((sum, name) => sum + (parseFloat(style[name]) || 0), 0);
      let least = px("minWidth");
      if (style.boxSizing !== "border-box") least += px("paddingLeft", "paddingRight", "borderLeftWidth", "borderRightWidth");
      width -= least + (parseFloat(getComputedStyle(body).columnGap) || 0);
    }
  }
  return Math.max(width, 0);
}

function stepBox(step) {
  return h(
    "button",
    // The name is cut to the box's width: the title shows it whole.
    { type: "button", class: "step", "data-step": step.name, title: step.name },
    h("span", { class: "name" }, step.name),
    h("span", { class: "meta" }, step.tool),
    h("span", { class: "bar" }, h("span", { class: "fill" })),
    h("span", { class: "note" }),
  );
}

function moreBox(hidden, onExpand) {
  const box = h(
    "button",
    { type: "button", class: "step more", "aria-expanded": "false" },
    h("span", { class: "name" }, `+ ${hidden.length} more`),
    h("span", { class: "meta" }),
    h("span", { class: "bar" }, h("span", { class: "fill" })),
    h("span", { class: "note" }, "click to show them"),
  );
  box.addEventListener("click", onExpand);
  return box;
}

/** The order statuses are listed in, and the one a box of many takes (the first present). */
const SUMMARY_ORDER = ["failed", "running", "retrying", "cancelled", "pending", "succeeded", "skipped"];
const DONE = new Set(["succeeded", "failed", "cancelled", "skipped"]);

/**
 * Redraw the box standing for a collapsed column's hidden steps from their statuses.
 * Called for every event of each of them, and each second for each running one: the
 * box is written to only when its summary changed (its tooltip names them all).
 */
function drawStandIn(standIn) {
  const { box, steps } = standIn;
  const counts = new Map();
  for (const step of steps) counts.set(step.status, (counts.get(step.status) || 0) + 1);
  const known = SUMMARY_ORDER.filter((s) => counts.has(s));
  const listed = [...known, ...[...counts.keys()].filter((s) => !SUMMARY_ORDER.includes(s))];
  const summary = listed.map((s) => `${counts.get(s)} ${s}`).join(" · ");
  if (standIn.summary === summary) return;
  standIn.summary = summary;
  standIn.names ??= steps.map((s) => s.name).join(", ");
  box.dataset.status = listed[0] === "retrying" ? "running" : listed[0];
  box.querySelector(".meta").textContent = summary;
  box.title = `${steps.length} more steps: ${summary}\n${standIn.names}`;
  box.setAttribute("aria-label", `${steps.length} more steps: ${summary}. Show them.`);
  const done = steps.filter((s) => DONE.has(s.status)).length;
  box.querySelector(".fill").style.width = `${Math.round((done / steps.length) * 100)}%`;
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
