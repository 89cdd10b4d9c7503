// stepstream's browser UI: runs, scenarios with their input forms, a run's step graph
// followed live over the WebSocket, and the worker registry. Plain DOM and ES modules,
// no build step, nothing fetched from outside the server. This module routes.

import { startBanner } from "./banner.js";
import { h } from "./dom.js";
import { runPage } from "./run.js";
import { runsPage } from "./runs.js";
import { scenariosPage } from "./scenarios.js";
import { workersPage } from "./workers.js";

const view = document.getElementById("view");
const pages = { runs: runsPage, scenarios: scenariosPage, workers: workersPage };
let stopPage = () => {};

function route() {
  stopPage();
  const match = location.pathname.match(/^\/runs\/([^/]+)\/?$/);
  const tab = match ? "runs" : location.hash.slice(1).split("?")[0] || "runs";
  const known = match || Object.hasOwn(pages, tab);
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", known && link.dataset.tab === tab);
  }
  view.replaceChildren();
  if (!known) {
    document.title = "Page not found · stepstream";
    view.append(notFound(`#${tab}`));
    stopPage = () => {};
    return;
  }
  document.title = match ? "run · stepstream" : `${tab[0].toUpperCase()}${tab.slice(1)} · stepstream`;
  const page = match ? () => runPage(view, runIdOf(match[1])) : () => pages[tab](view);
  stopPage = page() || (() => {});
}

/** The run id a path names; a malformed escape (`/runs/%E0%A4%A`) names no run, as it is. */
function runIdOf(segment) {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** What an unknown #tab shows: the same words and links as the server's 404 page. */
function notFound(what) {
  return h(
    "section",
    { class: "not-found" },
    h("h1", {}, "Page not found"),
    h("p", {}, "There is no page ", h("code", {}, what), "."),
    h("p", { class: "links" }, h("a", { href: "/#runs" }, "Runs"), " ", h("a", { href: "/#scenarios" }, "Scenarios")),
  );
}

window.addEventListener("hashchange", route);
window.addEventListener("popstate", route);
route();
startBanner();
