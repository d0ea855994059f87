// Images: what instances launch from; build the local busybox image, delete unused ones.

import { follow, get, inProject, request } from "../api.js";
import { ago, confirmDialog, h, notify, size, table } from "../ui.js";

export async function render(view) {
  const body = h("div");
  const build = h("button", { type: "button", async onclick() {
    build.disabled = true;
    try {
      await follow(await request("POST", "/images", { query: inProject(), body: { builder: "busybox", alias: "busybox" } }),
        (o) => { build.textContent = `Building… ${Math.round(o.progress * 100)} %`; });
      notify("Built busybox", "ok");
    } catch (err) {
      notify(err.message);
    }
    build.disabled = false;
    build.textContent = "Build busybox";
    load();
  } }, "Build busybox");
  view.append(h("div.head", h("h1", "Images"), h("span.spacer"), build), body,
    h("p.help", "More builders (debian/12, app) and imports: ", h("code", "cumulo image build"), ", ", h("code", "cumulo image import"), "."));

  async function load() {
    try {
      const images = await get("/images", { query: inProject() });
      body.replaceChildren(table(images, [
        ["Aliases", (i) => i.aliases.join(", ") || "–"], ["Fingerprint", (i) => h("code", i.fingerprint.slice(0, 12))],
        ["Kind", (i) => i.kind], ["OS", (i) => `${i.os} ${i.release}`.trim()], ["Size", (i) => size(i.size)],
        ["Created", (i) => ago(i.created_at)], ["Description", (i) => i.description],
        ["", (i) => h("button.danger", { type: "button", onclick: () => remove(i) }, "Delete")]], "No images yet: build busybox."));
    } catch (err) {
      notify(err.message);
    }
  }

  async function remove(img) {
    const ref = img.aliases[0] || img.fingerprint;
    if (!(await confirmDialog(`Delete image ${ref}?`, "Instances made from it must be gone first."))) return;
    try {
      await request("DELETE", `/images/${encodeURIComponent(ref)}`, { query: inProject() });
    } catch (err) {
      notify(err.message);
    }
    load();
  }
  await load();
}
