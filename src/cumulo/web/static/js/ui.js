// Small DOM helpers: elements built from data with textContent (never innerHTML), sizes,
// times, state badges, a confirmation dialog and one-line messages.

/** h("div.card#id", {attrs/on*}, ...children) */
export function h(tag, attrs = {}, ...children) {
  const [, name, rest] = tag.match(/^([a-z0-9]+)(.*)$/i);
  const el = document.createElement(name);
  for (const part of rest.match(/[.#][\w-]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs === null || typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs)) {
    children.unshift(attrs);
    attrs = {};
  }
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function size(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let n = Number(bytes);
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[i]}`;
}

export function ago(iso) {
  if (!iso) return "–";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (s < 60) return `${Math.max(0, Math.round(s))} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

export function badge(state) {
  return h(`span.badge.state-${String(state).toLowerCase()}`, { dataset: { state } }, state);
}

export function limitsText(limits = {}) {
  const parts = [];
  if (limits.cpu) parts.push(`${limits.cpu} CPU`);
  if (limits.memory) parts.push(size(limits.memory));
  if (limits.pids) parts.push(`${limits.pids} pids`);
  return parts.join(" · ") || "none";
}

export function addresses(inst) {
  return (inst.nics || []).map((n) => n.ip).filter(Boolean).join(", ") || "–";
}

/** A one-line message in the page's alert area (errors stay until replaced). */
export function notify(text, kind = "error") {
  const area = document.getElementById("messages");
  area.replaceChildren(h(`div.msg.${kind}`, { role: kind === "error" ? "alert" : "status" }, text,
    h("button.link.close", { type: "button", "aria-label": "dismiss", onclick: () => area.replaceChildren() }, "×")));
  if (kind !== "error") setTimeout(() => area.firstChild?.textContent.startsWith(text) && area.replaceChildren(), 4000);
}

export function clearMessages() {
  document.getElementById("messages").replaceChildren();
}

/** Ask before something that cannot be undone; resolves true when confirmed. */
export function confirmDialog(title, text, action = "Delete") {
  return new Promise((resolve) => {
    const dlg = h("dialog.confirm", { "aria-labelledby": "dlg-title" },
      h("h2#dlg-title", title), h("p", text),
      h("form.row", { method: "dialog" },
        h("button.secondary", { value: "cancel", type: "submit" }, "Cancel"),
        h("button.danger", { value: "ok", type: "submit" }, action)));
    dlg.addEventListener("close", () => {
      resolve(dlg.returnValue === "ok");
      dlg.remove();
    });
    document.body.append(dlg);
    dlg.showModal();
    dlg.querySelector("button.secondary").focus();
  });
}

/** Ask for one value (a snapshot's name...); resolves the text or null. */
export function promptDialog(title, label, value = "") {
  return new Promise((resolve) => {
    const input = h("input", { name: "value", value, required: true, "aria-label": label });
    const dlg = h("dialog.confirm", h("h2", title),
      h("form", { method: "dialog" }, h("label", label, input),
        h("div.row", h("button.secondary", { value: "cancel", type: "submit", formnovalidate: true }, "Cancel"),
          h("button.primary", { value: "ok", type: "submit" }, "OK"))));
    dlg.addEventListener("close", () => {
      resolve(dlg.returnValue === "ok" ? input.value.trim() : null);
      dlg.remove();
    });
    document.body.append(dlg);
    dlg.showModal();
    input.select();
  });
}

/** A table from rows and [header, cell(row)] columns; empty: a line saying so;
 * rowAttrs(row): a row's attributes (its data-name...). */
export function table(rows, columns, empty = "Nothing here yet.", rowAttrs = () => ({})) {
  if (!rows.length) return h("p.empty", empty);
  return h("div.scroll", h("table",
    h("thead", h("tr", columns.map(([title]) => h("th", { scope: "col" }, title)))),
    h("tbody", rows.map((r) => h("tr", rowAttrs(r), columns.map(([, cell]) => h("td", cell(r))))))));
}

export function section(title, ...children) {
  return h("section.card", h("h2", title), ...children);
}
