// Projects (tenants): each with its usage against its limits (/projects/NAME/state);
// create one with a few limits, delete an empty one. The API decides who may.

import { get, project, request } from "../api.js";
import { confirmDialog, h, notify, section, size, table } from "../ui.js";

const BYTES = new Set(["memory", "disk"]);
const SHOWN = [["instances", "Instances"], ["cpu", "CPU"], ["memory", "Memory"], ["disk", "Disk"], ["networks", "Networks"]];

/** Tell the header's project selector that the list changed. */
export const projectsChanged = () => window.dispatchEvent(new CustomEvent("cumulo-projects"));

function usage(q, key) {
  if (!q) return "–";
  const fmt = (n) => (BYTES.has(key) ? size(n) : String(n));
  if (q.limit === null || q.limit === undefined) return h("span.val", fmt(q.usage));
  const pct = q.limit > 0 ? Math.min(100, Math.round((q.usage / q.limit) * 100)) : 100;
  return h("span.meter", { title: `${pct} % of the limit` },
    h("span.bar", h("span.fill", { style: `width:${pct}%` })), h("span.val", `${fmt(q.usage)} / ${fmt(q.limit)}`));
}

export async function render(view) {
  const body = h("div");
  const field = (name, label, extra = {}) => h("input", { name, "aria-label": label, placeholder: label, size: 12, ...extra });
  const name = field("name", "name", { required: true });
  const description = field("description", "description", { size: 18 });
  const limits = [["limits.instances", field("instances", "max instances", { type: "number", min: 0 })],
    ["limits.cpu", field("cpu", "max CPU", { type: "number", min: 0, step: "any" })],
    ["limits.memory", field("memory", "max memory (2GiB)")],
    ["limits.disk", field("disk", "max disk (10GiB)")]];
  const form = h("form.row.new-project", { async onsubmit(ev) {
    ev.preventDefault();
    const config = Object.fromEntries(limits.filter(([, i]) => i.value.trim()).map(([k, i]) => [k, i.value.trim()]));
    try {
      await request("POST", "/projects", { body: { name: name.value.trim(), description: description.value.trim(), config } });
      notify(`Created project ${name.value.trim()}`, "ok");
      form.reset();
      projectsChanged();
    } catch (err) {
      notify(err.message);
    }
    load();
  } }, name, description, limits.map(([, i]) => i), h("button", { type: "submit" }, "Create project"));
  view.append(h("div.head", h("h1", "Projects"), h("span.muted", "tenants: their instances, networks and volumes apart, with quotas")),
    section("New project", form, h("p.help", "More settings (defaults, restrictions): ", h("code", "cumulo project set NAME KEY VALUE"), ".")), body);

  async function load() {
    let rows;
    try {
      const list = await get("/projects");
      const states = await Promise.all(list.map((p) => get(`/projects/${encodeURIComponent(p.name)}/state`).catch(() => ({}))));
      rows = list.map((p, i) => ({ ...p, state: states[i] }));
    } catch (err) {
      notify(err.message);
      return;
    }
    body.replaceChildren(table(rows, [
      ["Name", (p) => (p.name === project.get() ? h("span", h("strong", p.name), " ", h("span.badge", "current"))
        : h("button.link", { type: "button", title: "work in this project", onclick: () => use(p.name) }, p.name))],
      ["Description", (p) => p.description || "–"],
      ...SHOWN.map(([key, title]) => [title, (p) => usage(p.state[key], key)]),
      ["", (p) => (p.name === "default" ? "" : h("button.danger", { type: "button", onclick: () => remove(p.name) }, "Delete"))]],
    "No projects visible to this identity.", (p) => ({ dataset: { name: p.name } })));
  }

  function use(name) {
    project.set(name);
    projectsChanged();   // the shell reconnects in it and draws this page again
  }

  async function remove(what) {
    if (!(await confirmDialog(`Delete project ${what}?`, "Only an empty project can be deleted. This cannot be undone."))) return;
    try {
      await request("DELETE", `/projects/${encodeURIComponent(what)}`);
      notify(`Deleted project ${what}`, "ok");
      if (project.get() === what) project.set("default");
      projectsChanged();
    } catch (err) {
      notify(err.message);
    }
    load();
  }
  await load();
}
