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

/** fetch() with the tab's token; asks for a token when the server answers 401. */
export async function api(path, { method = "GET", json } = {}) {
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
    const body = isJson ? await response.json() : await response.text();
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
