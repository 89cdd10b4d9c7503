// Following a run's stream over the WebSocket: resume after the last event seen,
// reconnect with backoff, stop at the run's end.

import { RUN_TOKEN_KEY, TOKEN_KEY } from "./api.js";

/**
 * Open the run's WebSocket and keep it open until `stop()` or the run's end.
 * `cursor()` is the id of the last event applied (null before any); `onEvent(event)`
 * gets each event; `onConnection(state, text)` hears "live", "reconnecting" and
 * "finished"; `finished()` says whether the run's last event arrived.
 */
export function follow(runId, { cursor, finished, onEvent, onConnection }) {
  let socket = null;
  let stopped = false;
  let pause = 250;
  const connect = () => {
    if (stopped) return;
    const query = new URLSearchParams();
    const after = cursor();
    if (after) query.set("after", after);
    // The run's own token when this tab started the run: the API token stays out of URLs.
    const runToken = sessionStorage.getItem(RUN_TOKEN_KEY(runId));
    const token = runToken || sessionStorage.getItem(TOKEN_KEY);
    if (token) query.set("access_token", token);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const current = new WebSocket(`${scheme}//${location.host}/api/runs/${encodeURIComponent(runId)}/ws?${query}`);
    socket = current;
    let opened = false;
    current.addEventListener("open", () => {
      opened = true;
      onConnection("live", "live");
      pause = 250;
    });
    current.addEventListener("message", (message) => onEvent(JSON.parse(message.data)));
    current.addEventListener("close", () => {
      // Refused before it opened (expired): the next attempt uses the API token.
      if (runToken && !opened) sessionStorage.removeItem(RUN_TOKEN_KEY(runId));
      if (stopped || socket !== current) return;
      if (finished()) {
        onConnection("finished", "finished");
        return;
      }
      onConnection("reconnecting", "reconnecting…");
      setTimeout(connect, pause);
      pause = Math.min(pause * 2, 5000);
    });
  };
  connect();
  return () => {
    stopped = true;
    if (socket) socket.close();
  };
}
