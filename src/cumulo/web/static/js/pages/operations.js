// Operations with their progress, updated live from the event stream.

import { get, inProject, request } from "../api.js";
import { ago, h, notify, table } from "../ui.js";

export async function render(view) {
  const body = h("div");
  view.append(h("div.head", h("h1", "Operations"), h("span.muted", "launches, builds, imports, migrations")), body);
  let ops = [];

  function draw() {
    body.replaceChildren(table(ops, [
      ["What", (o) => o.description], ["Status", (o) => h(`span.badge.op-${o.status}`, o.status)],
      ["Progress", (o) => h("span.meter", h("span.bar", h("span.fill", { style: `width:${Math.round(o.progress * 100)}%` })),
        h("span.val", `${Math.round(o.progress * 100)} %`))],
      ["Message", (o) => o.error || o.message || "–"], ["Started", (o) => ago(o.created_at)],
      ["", (o) => (o.status === "running" || o.status === "pending"
        ? h("button", { type: "button", onclick: () => cancel(o.id) }, "Cancel") : "")]], "No operations yet."));
  }

  async function load() {
    try {
      ops = await get("/operations", { query: inProject() });
    } catch (err) {
      notify(err.message);
    }
    draw();
  }

  async function cancel(id) {
    try {
      await request("DELETE", `/operations/${id}`, { query: inProject() });
    } catch (err) {
      notify(err.message);
    }
  }

  const onEvent = (ev) => {
    const e = ev.detail;
    if (e.type !== "operation") return;
    const i = ops.findIndex((o) => o.id === e.metadata.id);
    if (i >= 0) ops[i] = { ...ops[i], ...e.metadata };
    else ops.unshift(e.metadata);
    draw();
  };
  window.addEventListener("cumulo-event", onEvent);
  await load();
  return () => window.removeEventListener("cumulo-event", onEvent);
}
