// Storage pools (usage bars) and the project's volumes.

import { get, inProject, request } from "../api.js";
import { confirmDialog, h, notify, section, size, table } from "../ui.js";

export async function render(view) {
  const pools = h("div");
  const vols = h("div");
  const name = h("input", { required: true, placeholder: "name", "aria-label": "volume name", size: 12 });
  const vsize = h("input", { required: true, placeholder: "size, e.g. 1GiB", "aria-label": "volume size", size: 14 });
  const form = h("form.row", { async onsubmit(ev) {
    ev.preventDefault();
    try {
      await request("POST", "/volumes", { query: inProject(), body: { name: name.value.trim(), size: vsize.value.trim() } });
      form.reset();
    } catch (err) {
      notify(err.message);
    }
    load();
  } }, name, vsize, h("button", { type: "submit" }, "Create volume"));
  view.append(h("div.head", h("h1", "Storage")), section("Pools", pools), section("Volumes", form, vols));

  async function load() {
    try {
      const [p, v] = await Promise.all([get("/storage-pools"), get("/volumes", { query: inProject() })]);
      pools.replaceChildren(table(p, [
        ["Name", (x) => x.name], ["Driver", (x) => x.driver], ["Path", (x) => h("code", x.path)],
        ["Usage", (x) => h("span.meter", h("span.bar", h("span.fill", { style: `width:${Math.min(100, (100 * (x.total - x.free)) / Math.max(1, x.total)).toFixed(0)}%` })),
          h("span.val", `${size(x.total - x.free)} of ${size(x.total)} (ours ${size(x.used)})`))],
        ["Roots", (x) => x.roots], ["Volumes", (x) => x.volumes]]));
      vols.replaceChildren(table(v, [
        ["Name", (x) => x.name], ["Pool", (x) => x.pool], ["Size", (x) => size(x.size)], ["Used", (x) => size(x.used)],
        ["Attached to", (x) => x.attachments.map((a) => `${a.instance}${a.path ? `:${a.path}` : ""}`).join(", ") || "–"],
        ["", (x) => h("button.danger", { type: "button", disabled: x.attachments.length > 0, onclick: () => remove(x.name) }, "Delete")]],
      "No volumes in this project."));
    } catch (err) {
      notify(err.message);
    }
  }

  async function remove(vol) {
    if (!(await confirmDialog(`Delete volume ${vol}?`, "Its data and snapshots go with it. This cannot be undone."))) return;
    try {
      await request("DELETE", `/volumes/${encodeURIComponent(vol)}`, { query: inProject() });
    } catch (err) {
      notify(err.message);
    }
    load();
  }
  await load();
}
