// Following a run's stream over the WebSocket: resume after the last event seen,
// reconnect with backoff, stop at the run's end.

import { ApiError, RUN_TOKEN_KEY, TOKEN_KEY, api, exactJson } from "./api.js";

/**
 * Open the run's WebSocket and keep it open until `stop()` or the run's end.
 * `cursor()` is the id of the last event applied (null before any); `onEvent(event)`
 * gets each event; `onConnection(state, text)` hears "live", "reconnecting",
 * "finished" and "gone" (the run no longer exists: no more attempts); `finished()` says
 * whether the run's last event arrived.
 */
export function follow(runId, { cursor, finished, onEvent, onConnection }) {
  let socket = null;
  let stopped = false;
  let pause = 250;
  let timer = null;
  const retry = () => {
    onConnection("reconnecting", "reconnecting…");
    timer = setTimeout(connect, pause);
    pause = Math.min(pause * 2, 5000);
  };
  // A browser never sees the status of a refused handshake: the same question asked
  // over HTTP tells a 401 (api() asks for the token, and then we retry with it) and a
  // 404 (the run is gone: retrying is pointless) from a server that is merely away.
  const refused = async () => {
    const before = sessionStorage.getItem(TOKEN_KEY);
    try {
      await api(`/api/runs/${encodeURIComponent(runId)}`);
      // A token just given is tried soon, whatever the backoff had grown to.
      if (sessionStorage.getItem(TOKEN_KEY) !== before) pause = 250;
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        if (!stopped) onConnection("gone", "this run no longer exists on the server; reload to check again");
        return;
      }
    }
    if (!stopped) retry();
  };
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
    current.addEventListener("message", (message) => onEvent(exactJson(message.data)));
    current.addEventListener("close", () => {
      // Refused before it opened (expired): the next attempt uses the API token.
      if (runToken && !opened) sessionStorage.removeItem(RUN_TOKEN_KEY(runId));
      if (stopped || socket !== current) return;
      if (finished()) {
        onConnection("finished", "finished");
        return;
      }
      if (opened) retry();
      else {
        onConnection("reconnecting", "reconnecting…");
        refused();
      }
    });
  };
  connect();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (socket) socket.close();
  };
}
