// A run's event log: one line per event, as it arrives.

import { h } from "./dom.js";

/** The log's element and `append(event)`, which keeps the view pinned to the bottom. */
export function createEventLog() {
  const log = h("ol", { id: "event-log", class: "event-log" });
  const append = (event) => {
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
  return { element: log, append };
}
