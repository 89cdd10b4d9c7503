// Small helpers shared by the pages: building elements, formatting, polling.

import { ApiError } from "./api.js";

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
export const RUN_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];

/** Build an element: h("a", {href: "/"}, "text", child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

export function svg(tag, attrs = {}) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttrs(el, attrs);
  return el;
}

export function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

/** "1 step", "2 steps". */
export function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

export function badge(status) {
  return h("span", { class: `badge status-${status}`, "data-status": status }, status);
}

export function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(ms / 60000);
  return `${minutes} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function runDuration(run) {
  if (!run.started_at) return null;
  const end = run.finished_at ? Date.parse(run.finished_at) : Date.now();
  return end - Date.parse(run.started_at);
}

export function errorText(error) {
  if (error instanceof ApiError) return `${error.status}: ${error.message}`;
  return `cannot reach the server (${error.message})`;
}

/** Call `fn` now and then every `ms` until the returned stop function is called. */
export function every(ms, fn, onError) {
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

export function alertLine() {
  const line = h("p", { class: "error", role: "alert" });
  return [line, (error) => (line.textContent = error ? errorText(error) : "")];
}
