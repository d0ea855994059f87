// Networks and security groups of the project.

import { get, inProject, request } from "../api.js";
import { confirmDialog, h, notify, section, table } from "../ui.js";

export async function render(view) {
  const nets = h("div");
  const groups = h("div");
  const name = h("input", { name: "name", required: true, placeholder: "name", "aria-label": "network name", size: 12 });
  const subnet = h("input", { name: "subnet", placeholder: "subnet (auto)", "aria-label": "subnet", size: 16 });
  const nat = h("input", { type: "checkbox" });
  const form = h("form.row", { async onsubmit(ev) {
    ev.preventDefault();
    try {
      await request("POST", "/networks", { query: inProject(), body: { name: name.value.trim(), subnet: subnet.value.trim() || null, nat: nat.checked } });
      form.reset();
    } catch (err) {
      notify(err.message);
    }
    load();
  } }, name, subnet, h("label.check", nat, " NAT to the outside"), h("button", { type: "submit" }, "Create network"));
  view.append(h("div.head", h("h1", "Networks")), section("Networks", form, nets), section("Security groups", groups,
    h("p.help", "Rules and attachments: ", h("code", "cumulo network acl"), ".")));

  async function load() {
    try {
      const [n, g] = await Promise.all([get("/networks", { query: inProject() }), get("/security-groups", { query: inProject() })]);
      nets.replaceChildren(table(n, [
        ["Name", (x) => x.name], ["Subnet", (x) => x.subnet], ["Gateway", (x) => x.gateway], ["Bridge", (x) => h("code", x.bridge)],
        ["Outside", (x) => (x.nat ? "NAT" : "isolated")], ["DNS", (x) => x.dns_domain], ["Used by", (x) => x.used_by.join(", ") || "–"],
        ["", (x) => h("button.danger", { type: "button", disabled: x.used_by.length > 0, onclick: () => remove("networks", x.name) }, "Delete")]],
      "No networks in this project."));
      groups.replaceChildren(table(g, [
        ["Name", (x) => x.name], ["Description", (x) => x.description || "–"],
        ["Rules", (x) => (x.rules.length ? h("ul.plain", x.rules.map((r) => h("li", h("code", r.text)))) : "none (deny all in)")],
        ["Used by", (x) => x.used_by.join(", ") || "–"],
        ["", (x) => h("button.danger", { type: "button", onclick: () => remove("security-groups", x.name) }, "Delete")]],
      "No security groups."));
    } catch (err) {
      notify(err.message);
    }
  }

  async function remove(kind, what) {
    if (!(await confirmDialog(`Delete ${what}?`, "This cannot be undone."))) return;
    try {
      await request("DELETE", `/${kind}/${encodeURIComponent(what)}`, { query: inProject() });
    } catch (err) {
      notify(err.message);
    }
    load();
  }
  await load();
}
