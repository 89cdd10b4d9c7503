// A run's timeline: its steps and their attempts on a time axis.

import { h } from "./dom.js";

/** The timeline's element and `update(event, steps)`, called after each applied event. */
export function createTimeline() {
  const element = h("div", { id: "timeline", class: "timeline" });
  const update = () => {};
  return { element, update };
}
