// Talking to the API: fetch with the tab's token, and the token prompt on a 401.

export const TOKEN_KEY = "stepstream.token";
// A run's own read-only token (stream_token), kept for the tab by the form that started it.
export const RUN_TOKEN_KEY = (runId) => `stepstream.run-token.${runId}`;

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/**
 * JSON.parse that keeps integers beyond 2^53 exact, as raw JSON that JSON.stringify
 * writes back digit for digit: a run's input or a step's output holding 2^53 + 1 would
 * otherwise be shown as 2^53. Only for data shown as JSON: such a value is no number.
 */
export function exactJson(text) {
  if (typeof JSON.rawJSON !== "function") return JSON.parse(text);
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number" && Number.isInteger(value) && !Number.isSafeInteger(value) && /^-?\d+$/.test(context?.source ?? "")
      ? JSON.rawJSON(context.source)
      : value,
  );
}

/**
 * fetch() with the tab's token; asks for a token when the server answers 401. `exact`
 * reads the body with exactJson (a run's snapshot, shown as JSON).
 */
export async function api(path, { method = "GET", json, exact = false } = {}) {
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
    const text = await response.text();
    const body = isJson ? (exact ? exactJson(text) : JSON.parse(text)) : text;
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }
}

let tokenPrompt = null;

/** Show the token dialog once, however many requests are waiting for it. */
export function askForToken(problem) {
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
