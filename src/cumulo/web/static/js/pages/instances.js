// Instances: live state from the event stream, with CPU and memory at a glance from the
// daemon's metrics (CPU: the time used between two scrapes).

import { get, imageNames, inProject, project } from "../api.js";
import { usageOf } from "../metrics.js";
import { addresses, badge, h, limitsText, notify, size } from "../ui.js";

const FIRST_USAGE = 2000;   // ms: the second scrape, which gives the first CPU figure
const USAGE_EVERY = 10000;

export async function render(view) {
  const filter = h("input#filter", { type: "search", placeholder: "filter by name, image, state…",
    "aria-label": "filter instances" });
  const body = h("div.scroll");
  view.append(h("div.head", h("h1", "Instances"), h("span.muted", `project ${project.get()}`),
    h("span.spacer"), filter, h("a.button.primary", { href: "#/launch" }, "Launch")), body);
  let rows = [];
  let imageName = await imageNames();
  const usage = new Map();

  function draw() {
    const q = filter.value.trim().toLowerCase();
    const shown = rows.filter((i) => !q || [i.name, i.image, i.state, i.type].some((x) => x.toLowerCase().includes(q)));
    if (!rows.length) {
      body.replaceChildren(h("p.empty", "No instances in this project. ", h("a", { href: "#/launch" }, "Launch one"), "."));
      return;
    }
    body.replaceChildren(h("table.instances",
      h("thead", h("tr", ["Name", "State", "Type", "Image", "Limits", "Address", "CPU", "Memory"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", shown.map((i) => {
        const u = usage.get(i.name);
        return h("tr", { dataset: { name: i.name } },
          h("td", h("a", { href: `#/instances/${encodeURIComponent(i.name)}` }, i.name)),
          h("td.state", badge(i.state)), h("td", i.type), h("td", { title: i.image }, imageName(i.image)),
          h("td", limitsText(i.limits)), h("td", addresses(i)),
          h("td.cpu", u && u.cpu_usage !== null ? meter(u.cpu_usage / (i.limits.cpu || 1), `${(u.cpu_usage * 100).toFixed(1)} %`) : "–"),
          h("td.mem", u && u.memory_bytes !== null ? meter(i.limits.memory ? u.memory_bytes / i.limits.memory : 0, size(u.memory_bytes)) : "–"));
      }))));
  }

  async function load() {
    try {
      [rows, imageName] = await Promise.all([get("/instances", { query: inProject() }), imageNames()]);
    } catch (err) {
      notify(err.message);
      return;
    }
    draw();
  }

  let before = new Map();
  async function loadUsage() {
    if (document.hidden) return;
    let now;
    try {
      now = await usageOf(project.get());
    } catch {
      return;   // metrics not readable: the columns stay empty
    }
    for (const [name, u] of now) {
      const b = before.get(name);
      const dt = b ? u.time - b.time : 0;
      const cpu = b && dt > 0 && u.cpu_seconds !== null && b.cpu_seconds !== null
        ? Math.max(0, (u.cpu_seconds - b.cpu_seconds) / dt) : usage.get(name)?.cpu_usage ?? null;
      usage.set(name, { memory_bytes: u.memory_bytes, cpu_usage: cpu });
    }
    for (const name of usage.keys()) if (!now.has(name)) usage.delete(name);
    before = now;
    draw();
  }

  let pending = null;
  const onEvent = (ev) => {
    if (ev.detail.type !== "lifecycle") return;
    clearTimeout(pending);
    pending = setTimeout(load, 150);   // a burst of events: one reload
  };
  filter.addEventListener("input", draw);
  window.addEventListener("cumulo-event", onEvent);
  await load();
  loadUsage();
  const first = setTimeout(loadUsage, FIRST_USAGE);
  const timer = setInterval(loadUsage, USAGE_EVERY);
  return () => {
    clearTimeout(first);
    clearInterval(timer);
    clearTimeout(pending);
    window.removeEventListener("cumulo-event", onEvent);
  };
}

function meter(fraction, text) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  return h("span.meter", { title: text }, h("span.bar", h("span.fill", { style: `width:${pct.toFixed(0)}%` })), h("span.val", text));
}
