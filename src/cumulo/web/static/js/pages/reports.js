// Benchmark reports: the HTML `cumulo bench report --html` wrote into STATE_DIR/reports/.

import { get, request } from "../api.js";
import { ago, h, notify, size, table } from "../ui.js";

export async function render(view) {
  const frame = h("iframe.report", { title: "benchmark report", sandbox: "", hidden: true });
  const list = h("div");
  view.append(h("div.head", h("h1", "Benchmark reports")), list,
    h("p.help", "Write one with ", h("code", "cumulo bench report RESULTS.json --html /var/lib/cumulo/reports/NAME.html"),
      " (the daemon's state dir)."), frame);
  let reports = [];
  try {
    reports = await get("/reports");
  } catch (err) {
    notify(err.message);
  }
  list.replaceChildren(table(reports, [
    ["Report", (r) => h("button.link", { type: "button", onclick: () => open(r.name) }, r.name)],
    ["Size", (r) => size(r.size)], ["Written", (r) => ago(r.modified)]], "No reports yet."));

  async function open(name) {
    try {
      frame.srcdoc = await withPlots(await request("GET", `/reports/${encodeURIComponent(name)}`, { text: true }));
      frame.hidden = false;
      frame.focus();
    } catch (err) {
      notify(err.message);
    }
  }
}

/** The report's plots (PNG files beside it, behind the token like the report) inlined as
 * data: URLs, so the sandboxed frame needs no access of its own. */
async function withPlots(html) {
  const doc = new DOMParser().parseFromString(html, "text/html");
  await Promise.all([...doc.querySelectorAll("img[src]")].map(async (img) => {
    const src = img.getAttribute("src");
    if (!/^[\w.-]+\.png$/.test(src)) return;
    const resp = await request("GET", `/reports/${encodeURIComponent(src)}`, { raw: true }).catch(() => null);
    if (!resp) return;
    const blob = await resp.blob();
    img.src = await new Promise((resolve) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.readAsDataURL(blob);
    });
  }));
  return `<!doctype html>${doc.documentElement.outerHTML}`;
}
