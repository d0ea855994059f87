// The console's shell: sign-in, the hash router (#/instances, #/instances/NAME...), the
// project field, and one events websocket whose frames every page can listen to.

import { auth, features, get, project, socket, whenUnauthorized } from "./api.js";
import { clearMessages, h } from "./ui.js";

const PAGES = {
  instances: () => import("./pages/instances.js"),
  instance: () => import("./pages/instance.js"),
  launch: () => import("./pages/launch.js"),
  images: () => import("./pages/images.js"),
  networks: () => import("./pages/networks.js"),
  storage: () => import("./pages/storage.js"),
  operations: () => import("./pages/operations.js"),
  reports: () => import("./pages/reports.js"),
  projects: () => import("./pages/projects.js"),
  identities: () => import("./pages/identities.js"),
};

let cleanup = null;
let events = null;
let eventsProject = null;
let shown = 0;   // how many pages were asked for: a slower, older one must not linger   // the project the events websocket (and every page) is in
let retry = 1000;

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "instances" && parts[1]) return ["instance", { name: parts[1], tab: parts[2] }];
  return [PAGES[parts[0]] ? parts[0] : "instances", {}];
}

async function show() {
  if (!auth.token()) return signIn();
  document.body.classList.remove("signed-out");
  const [page, params] = route();
  if (cleanup) cleanup();
  cleanup = null;
  clearMessages();
  for (const a of document.querySelectorAll("nav.side a")) {
    const on = a.dataset.page === page || (page === "instance" && a.dataset.page === "instances");
    a.classList.toggle("active", on);
    if (on) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const root = document.getElementById("page");
  root.replaceChildren(h("p.loading", "Loading…"));
  const mine = ++shown;
  const mod = await PAGES[page]();
  if (mine !== shown) return;   // another page was asked for meanwhile
  const view = h("div.view");
  root.replaceChildren(view);
  const done = (await mod.render(view, params)) || null;
  if (mine === shown) cleanup = done;
  else if (done) done();   // replaced while it rendered: its listeners go with it
}

/** Sign in with a token: an identity's (`cumulo identity create`) or `cumulo ui`'s URL. */
function signIn(message) {
  document.body.classList.add("signed-out");
  shown++;   // a page still loading (a 401 came meanwhile) must not replace the form
  if (cleanup) cleanup();
  cleanup = null;
  if (events) events.close();
  const input = h("input#token", { type: "password", autocomplete: "off", required: true,
    placeholder: "token", "aria-describedby": "token-help" });
  const error = h("p.msg.error", { role: "alert", hidden: !message }, message || "");
  const form = h("form.signin.card", {
    async onsubmit(ev) {
      ev.preventDefault();
      auth.set(input.value.trim());
      try {
        await get("");
      } catch (err) {
        auth.clear();
        error.hidden = false;
        error.textContent = err.status === 401 ? "That token is not accepted by this cumulod." : err.message;
        return;
      }
      start();
    },
  },
  h("h1", "Sign in to Cumulo"),
  h("label", { for: "token" }, "Token"), input,
  h("p#token-help.help", "On the host: ", h("code", "cumulo ui"), " prints a signed-in link; ",
    h("code", "cumulo identity create NAME --role viewer"), " prints a token to paste here (its role decides what you may do)."),
  error, h("button.primary", { type: "submit" }, "Sign in"));
  document.getElementById("page").replaceChildren(form);
  input.focus();
}

function connectEvents() {
  const live = document.getElementById("live");
  eventsProject = project.get();
  events = socket("/events", { type: "lifecycle,operation", project: eventsProject });
  const ws = events;
  ws.onopen = () => {
    retry = 1000;
    live.textContent = "live";
    live.className = "live on";
  };
  ws.onmessage = (msg) => {
    if (typeof msg.data !== "string") return;
    const event = JSON.parse(msg.data);
    window.dispatchEvent(new CustomEvent("cumulo-event", { detail: event }));
  };
  ws.onclose = () => {
    if (events !== ws) return;
    live.textContent = "reconnecting…";
    live.className = "live off";
    if (!auth.token()) return;
    get("").catch(() => {});   // a token no longer accepted: back to the sign-in form
    setTimeout(() => events === ws && auth.token() && connectEvents(), retry);
    retry = Math.min(retry * 2, 15000);
  };
}

/** The header's selector: the projects this identity sees (GET /projects); a chosen one it
 * no longer sees (deleted, role taken away) gives way to the first it does. */
async function loadProjects() {
  const field = document.getElementById("project");
  let names = ["default"];
  if ((await features()).projects) {   // once projects have landed
    names = await get("/projects").then((list) => list.map((p) => p.name)).catch(() => names);
  }
  if (names.length && !names.includes(project.get())) {
    project.set(names.includes("default") ? "default" : names[0]);
    start();
    return;
  }
  field.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
  field.value = project.get();
}

function start() {
  if (events) {
    const old = events;
    events = null;
    old.close();
  }
  connectEvents();
  loadProjects();
  if (!location.hash || location.hash === "#") location.hash = "#/instances";
  show();
}

function keys() {
  let pending = false;
  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (t.closest && t.closest("input, textarea, select, .xterm, dialog")) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (pending) {
      pending = false;
      const to = { i: "instances", l: "launch", o: "operations", m: "images", n: "networks", s: "storage", r: "reports",
        p: "projects", y: "identities" }[ev.key];
      if (to) location.hash = `#/${to}`;
    } else if (ev.key === "g") {
      pending = true;
      setTimeout(() => { pending = false; }, 1500);
    }
  });
}

window.addEventListener("hashchange", () => {
  if (auth.fromFragment()) start();   // a new `cumulo ui` URL pasted into an open tab
  else if (auth.token()) show();
});
whenUnauthorized(() => {
  if (document.body.classList.contains("signed-out")) return;   // the sign-in form says why
  auth.clear();
  signIn("The token is no longer accepted (revoked, expired, or cumulod restarted): sign in again.");
});
document.getElementById("signout").addEventListener("click", () => {
  auth.clear();
  signIn();
});
document.getElementById("project").addEventListener("change", (ev) => {
  project.set(ev.target.value);
  start();
});
// a page created, deleted or chose a project: the selector follows, and a new project
// is taken up by the events websocket and the page
window.addEventListener("cumulo-projects", () => {
  if (project.get() !== eventsProject) start();
  else loadProjects();
});
keys();
auth.fromFragment();
if (auth.token()) start();
else signIn();
