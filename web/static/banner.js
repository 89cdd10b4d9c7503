// A banner across every page while no worker is alive: runs submitted meanwhile only
// wait. It asks the registry on its own, quietly: a page without a token (a run opened
// with its run token) is not asked for one on its account, and a server it cannot read
// shows no banner rather than a wrong one.

import { TOKEN_KEY } from "./api.js";
import { h } from "./dom.js";

// How often the registry is asked while the tab is visible.
const POLL_MS = 5000;

export function startBanner() {
  const banner = h(
    "div",
    { id: "no-worker-banner", class: "no-worker-banner", role: "status", hidden: true },
    "No worker is running: runs will wait. Start one with ",
    h("code", {}, "make up"),
    " or ",
    h("code", {}, "celery -A worker worker"),
  );
  document.querySelector("header").after(banner);
  let timer = null;
  const check = async () => {
    clearTimeout(timer);
    banner.hidden = (await anyWorkerAlive()) !== false;
    if (!document.hidden) timer = setTimeout(check, POLL_MS);
  };
  // A hidden tab stops asking, and asks again as soon as it is looked at.
  document.addEventListener("visibilitychange", () => (document.hidden ? clearTimeout(timer) : check()));
  check();
}

/** true, false, or null when the registry cannot be read. */
async function anyWorkerAlive() {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const response = await fetch("/api/workers", { headers });
    if (!response.ok) return null;
    const workers = await response.json();
    return Array.isArray(workers) ? workers.some((w) => w.status === "ok") : null;
  } catch {
    return null;
  }
}
