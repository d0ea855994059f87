// Identities (admins only; anyone else gets the API's one-line 403 here): who may call
// over the network, with which role where. A new identity's token is shown once.

import { get, project, request } from "../api.js";
import { ago, confirmDialog, h, notify, section, table } from "../ui.js";

const ROLES = ["viewer", "user", "operator", "admin"];

function rolesText(i) {
  if (i.admin) return "admin (server-wide)";
  if (i.kind === "remote") return "remote (migration only)";
  return Object.entries(i.roles).map(([p, r]) => `${r} in ${p}`).join(", ") || "none";
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "never");

export async function render(view) {
  const head = h("div.head", h("h1", "Identities"), h("span.muted", "who may call this cumulod over the network"));
  view.append(head);
  let list;
  try {
    list = await get("/identities");
  } catch (err) {
    if (err.status === 403) view.append(h("p.msg.warn#denied", { role: "status" }, `You lack the right to see identities: ${err.message}`));
    else notify(err.message);
    return null;
  }
  const body = h("div");
  const created = h("div#new-token", { hidden: true });
  const name = h("input", { name: "name", required: true, placeholder: "name", "aria-label": "identity name", size: 14 });
  const where = h("select", { name: "project", "aria-label": "project" });
  const role = h("select", { name: "role", "aria-label": "role" }, ROLES.map((r) => h("option", { value: r }, r)));
  const expires = h("input", { name: "expires", placeholder: "expires in (30d, 12h; empty: never)", "aria-label": "expires in", size: 26 });
  role.addEventListener("change", () => { where.disabled = role.value === "admin"; });
  const form = h("form.row.new-identity", { async onsubmit(ev) {
    ev.preventDefault();
    try {
      const ident = await request("POST", "/identities", { body: { name: name.value.trim(), role: role.value,
        project: role.value === "admin" ? null : where.value, expires: expires.value.trim() || null } });
      form.reset();
      where.disabled = false;
      where.value = project.get();
      showToken(ident);
    } catch (err) {
      notify(err.message);
    }
    load();
  } }, name, h("label.check", "role ", role), h("label.check", "in ", where), expires, h("button", { type: "submit" }, "Create identity"));
  const projects = await get("/projects").catch(() => [{ name: project.get() }]);
  where.replaceChildren(...projects.map((p) => h("option", { value: p.name }, p.name)));
  where.value = project.get();
  view.append(section("New identity", form, created), body);

  /** The token, in this answer only: a copy button, then gone for good. */
  function showToken(ident) {
    const code = h("code.token", ident.token);
    const copy = h("button.primary", { type: "button", async onclick() {
      try {
        await navigator.clipboard.writeText(ident.token);
        notify("Token copied", "ok");
      } catch {
        getSelection().selectAllChildren(code);   // no clipboard access: selected, for Ctrl+C
        notify("The browser refused the clipboard: the token is selected, copy it with Ctrl+C", "warn");
      }
    } }, "Copy");
    const done = h("button.secondary", { type: "button", onclick() {
      created.replaceChildren();
      created.hidden = true;
      name.focus();
    } }, "Done");
    created.replaceChildren(h("div.msg.ok.token-once", { role: "status" },
      h("div", h("p", `Token of ${ident.name} (${rolesText(ident)}), shown only now: the daemon keeps only its hash.`),
        h("p", code)), copy, done));
    created.hidden = false;
    copy.focus();
  }

  async function load() {
    try {
      list = await get("/identities");
    } catch (err) {
      notify(err.message);
      return;
    }
    draw();
  }

  function draw() {
    body.replaceChildren(table(list, [
      ["Name", (i) => i.name], ["Kind", (i) => i.kind], ["Role", rolesText],
      ["Expires", (i) => when(i.expires_at)], ["Last used", (i) => ago(i.last_used_at)],
      ["", (i) => h("button.danger", { type: "button", onclick: () => revoke(i.name) }, "Revoke")]],
    "No identities yet.", (i) => ({ dataset: { name: i.name } })));
  }

  async function revoke(what) {
    if (!(await confirmDialog(`Revoke ${what}?`, "Its token is refused from its next request on, and its open sessions are closed.", "Revoke"))) return;
    try {
      await request("DELETE", `/identities/${encodeURIComponent(what)}`);
      notify(`Revoked ${what}`, "ok");
    } catch (err) {
      notify(err.message);
    }
    load();
  }
  draw();
  return null;
}
