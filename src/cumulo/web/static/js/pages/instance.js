// One instance: actions (with confirmation where nothing can be undone), and tabs for its
// overview, a terminal (exec), a VM's serial console, usage graphs, logs and snapshots.

import { follow, get, imageNames, inProject, request } from "../api.js";
import { plot } from "../plot.js";
import { openTerminal } from "../terminal.js";
import { addresses, ago, badge, confirmDialog, h, limitsText, notify, promptDialog, size, table } from "../ui.js";

const TABS = ["overview", "terminal", "console", "graphs", "logs", "snapshots"];

export async function render(view, { name, tab }) {
  const path = `/instances/${encodeURIComponent(name)}`;
  let inst;
  try {
    inst = await get(path, { query: inProject() });
  } catch (err) {
    view.append(h("h1", name), h("p.msg.error", { role: "alert" }, err.message), h("a", { href: "#/instances" }, "Back to instances"));
    return null;
  }
  const imageName = await imageNames();
  const isVm = inst.type !== "container";
  const tabs = TABS.filter((t) => t !== "console" || isVm);
  let current = tabs.includes(tab) ? tab : "overview";
  let closeTab = null;

  const title = h("div.head");
  const actions = h("div.actions", { role: "toolbar", "aria-label": "instance actions" });
  const tabBar = h("div.tabs", { role: "tablist" });
  const panel = h("div.panel", { role: "tabpanel" });
  view.append(title, actions, tabBar, panel);

  function header() {
    title.replaceChildren(h("h1", inst.name), badge(inst.state), h("span.muted", { title: inst.image }, `${inst.type} · ${imageName(inst.image)}`),
      h("span.spacer"), h("a", { href: "#/instances" }, "← all instances"));
    const s = inst.state;
    const act = (label, action, enabled, extra = {}) => h("button", { type: "button", disabled: !enabled,
      onclick: () => change(action, extra) }, label);
    actions.replaceChildren(
      act("Start", "start", s === "stopped" || s === "error"),
      act("Stop", "stop", s === "running" || s === "paused", { timeout: 10 }),
      act("Restart", "restart", s === "running" || s === "stopped", { timeout: 10 }),
      s === "paused" ? act("Resume", "resume", true) : act("Pause", "pause", s === "running"),
      h("button", { type: "button", onclick: snapshot }, "Snapshot"),
      h("button.danger", { type: "button", onclick: remove }, "Delete"));
  }

  async function reload() {
    try {
      inst = await get(path, { query: inProject() });
    } catch (err) {
      if (err.status === 404) location.hash = "#/instances";
      return;
    }
    header();
    if (current === "overview") showTab("overview");
  }

  async function change(action, extra) {
    for (const b of actions.querySelectorAll("button")) b.disabled = true;
    try {
      const op = await request("PUT", `${path}/state`, { body: { action, ...extra }, query: inProject() });
      await follow(op);
      notify(`${action}: done`, "ok");
    } catch (err) {
      notify(err.message);
    }
    await reload();
  }

  async function snapshot() {
    const snap = await promptDialog(`Snapshot ${inst.name}`, "Snapshot name", `snap-${new Date().toISOString().slice(0, 19).replace(/[-:T]/g, "")}`);
    if (!snap) return;
    try {
      await request("POST", `${path}/snapshots`, { body: { name: snap }, query: inProject() });
      notify(`Snapshot ${snap} created`, "ok");
      if (current === "snapshots") showTab("snapshots");
    } catch (err) {
      notify(err.message);
    }
  }

  async function remove() {
    const running = inst.state === "running" || inst.state === "paused";
    const ok = await confirmDialog(`Delete ${inst.name}?`,
      `Its root disk and snapshots go with it${running ? "; it is running and will be stopped first" : ""}. This cannot be undone.`);
    if (!ok) return;
    if (closeTab) closeTab();   // no more reads of what is going away
    closeTab = null;
    try {
      const op = await request("DELETE", path, { query: inProject({ force: running }) });
      await follow(op);
      notify(`Deleted ${inst.name}`, "ok");
      location.hash = "#/instances";
    } catch (err) {
      notify(err.message);
    }
  }

  function showTab(t) {
    current = t;
    if (closeTab) closeTab();
    closeTab = null;
    tabBar.replaceChildren(...tabs.map((x) => h("button.tab", { type: "button", role: "tab", "aria-selected": String(x === t),
      tabindex: x === t ? "0" : "-1", dataset: { tab: x }, onclick: () => selectTab(x), onkeydown: tabKeys }, x[0].toUpperCase() + x.slice(1))));
    panel.replaceChildren();
    closeTab = ({ overview, terminal, console: serial, graphs, logs, snapshots })[t](panel) || null;
  }

  function selectTab(t) {
    history.replaceState(null, "", `#/instances/${encodeURIComponent(name)}/${t}`);
    showTab(t);
    tabBar.querySelector(`[data-tab="${t}"]`).focus();
  }

  function tabKeys(ev) {
    const i = tabs.indexOf(current);
    if (ev.key === "ArrowRight") selectTab(tabs[(i + 1) % tabs.length]);
    if (ev.key === "ArrowLeft") selectTab(tabs[(i + tabs.length - 1) % tabs.length]);
  }

  function overview(box) {
    const u = inst.usage || {};
    const dl = (pairs) => h("dl.facts", pairs.flatMap(([k, v]) => [h("dt", k), h("dd", v ?? "–")]));
    box.append(h("div.cols",
      h("section.card", h("h2", "Instance"), dl([
        ["State", badge(inst.state)], ["Type", inst.type], ["Image", h("span", { title: inst.image }, imageName(inst.image))],
        ["Command", inst.command.map((a) => (/[\s"'$]/.test(a) ? `'${a.replaceAll("'", "'\\''")}'` : a)).join(" ") || "the image's"], ["Created", ago(inst.created_at)],
        ["PID", inst.pid], ["Exit code", inst.exit_code], ["Last error", inst.last_error],
        ["Options", Object.entries(inst.options).map(([k, v]) => `${k}=${v}`).join(" ") || "–"]])),
      h("section.card", h("h2", "Resources"), dl([
        ["Limits", limitsText(inst.limits)], ["Memory in use", u.memory_bytes != null ? size(u.memory_bytes) : "–"],
        ["Memory peak", u.memory_peak_bytes != null ? size(u.memory_peak_bytes) : "–"],
        ["CPU time", u.cpu_time_ns != null ? `${(u.cpu_time_ns / 1e9).toFixed(2)} s` : "–"],
        ["Processes", u.pids], ["Root", inst.root ? `${inst.root.pool}${inst.root.size ? `, ${size(inst.root.size)}` : ""}` : "–"],
        ["Address", addresses(inst)]]))),
    h("section.card", h("h2", "Network interfaces"), table(inst.nics, [
      ["Network", (n) => n.network], ["Address", (n) => n.ip], ["MAC", (n) => n.mac], ["Host side", (n) => n.host_name],
      ["Received", (n) => (n.counters ? size(n.counters.rx_bytes) : "–")], ["Sent", (n) => (n.counters ? size(n.counters.tx_bytes) : "–")],
      ["Groups", (n) => n.groups.join(", ") || "–"]], "Loopback only.")));
    return null;
  }

  function shell(box, kind) {
    if (inst.state !== "running") {
      box.append(h("p.empty", `Start ${inst.name} to open its ${kind === "exec" ? "terminal" : "console"}.`));
      return null;
    }
    const termBox = h("div.termbox");
    let close = () => {};
    if (kind === "exec") {
      const cmd = h("input", { value: "sh", "aria-label": "command", size: 24 });
      const connect = async () => {
        close();
        close = await openTerminal(termBox, inst.name, "exec", cmd.value.trim().split(/\s+/));
      };
      box.append(h("form.row", { onsubmit: (ev) => { ev.preventDefault(); connect(); } },
        h("label", "Command ", cmd), h("button", { type: "submit" }, "Reconnect")), termBox);
      connect();
    } else {
      box.append(h("p.help", "The VM's serial port: what its console prints, and what you type goes to it."), termBox);
      openTerminal(termBox, inst.name, "console").then((c) => { close = c; });
    }
    return () => close();
  }

  function graphs(box) {
    const cpuPlot = plot("CPU", ["CPUs used"]);
    const memPlot = plot("Memory", ["in use"]);
    const netPlot = plot("Network", ["received/s", "sent/s"]);
    const note = h("p.help");
    box.append(note, h("div.plots", cpuPlot, memPlot, netPlot));
    let timer = null;
    let stopped = false;
    const pct = (v) => `${(v * 100).toFixed(v < 0.1 ? 1 : 0)} %`;
    const rate = (v) => `${size(v)}/s`;
    async function tick() {
      try {
        const hist = await get(`${path}/history`, { query: inProject() });
        const pts = hist.points;
        const times = pts.map((p) => p.time);
        cpuPlot.update(times, [pts.map((p) => p.cpu_usage)], pct);
        memPlot.update(times, [pts.map((p) => p.memory_bytes)], size);
        const d = (k) => pts.map((p, i) => (i === 0 ? null : Math.max(0, (p[k] - pts[i - 1][k]) / Math.max(1e-3, p.time - pts[i - 1].time))));
        netPlot.update(times, [d("rx_bytes"), d("tx_bytes")], rate);
        note.textContent = hist.interval ? `A reading every ${hist.interval} s, kept for the last hour (cumulod --history-interval).`
          : "cumulod keeps no history (started with --history-interval 0).";
        if (!stopped) timer = setTimeout(tick, Math.min(10, Math.max(1, hist.interval || 10)) * 1000);
      } catch (err) {
        note.textContent = err.message;
      }
    }
    tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }

  function logs(box) {
    const pre = h("pre.logs", { tabindex: "0", "aria-label": "console output" });
    const followBox = h("input", { type: "checkbox", checked: true });
    box.append(h("div.row", h("label.check", followBox, " follow"), h("span.help", "PID 1's output (what `cumulo logs` shows)")), pre);
    let offset = 0;
    let timer = null;
    const decoder = new TextDecoder();
    async function tick() {
      try {
        const resp = await request("GET", `${path}/console`, { query: inProject({ offset }), raw: true });
        const text = decoder.decode(await resp.arrayBuffer(), { stream: true });
        offset = Number(resp.headers.get("X-Cumulo-Offset") || offset);
        if (text) {
          pre.append(text);
          if (followBox.checked) pre.scrollTop = pre.scrollHeight;
        }
        if (!pre.textContent) pre.textContent = "";
      } catch (err) {
        notify(err.message);
        return;
      }
      timer = setTimeout(tick, 2000);
    }
    tick();
    return () => clearTimeout(timer);
  }

  function snapshots(box) {
    const list = h("div", h("p.loading", "Loading…"));
    box.append(h("div.row", h("button", { type: "button", onclick: snapshot }, "New snapshot")), list);
    (async () => {
      try {
        const snaps = await get(`${path}/snapshots`, { query: inProject() });
        list.replaceChildren(table(snaps, [["Name", (s) => s.name], ["Stateful", (s) => (s.stateful ? "yes" : "no")],
          ["", (s) => h("span.row",
            h("button", { type: "button", onclick: () => restoreSnap(s.name) }, "Restore"),
            h("button.danger", { type: "button", onclick: () => deleteSnap(s.name) }, "Delete"))]], "No snapshots."));
      } catch (err) {
        list.replaceChildren(h("p.msg.error", err.message));
      }
    })();
    return null;
  }

  async function restoreSnap(snap) {
    if (!(await confirmDialog(`Restore ${snap}?`, `${inst.name}'s root goes back to ${snap}; later changes are lost.`, "Restore"))) return;
    try {
      await request("POST", `${path}/snapshots/${encodeURIComponent(snap)}/restore`, { query: inProject() });
      notify(`Restored ${snap}`, "ok");
    } catch (err) {
      notify(err.message);
    }
    showTab("snapshots");
  }

  async function deleteSnap(snap) {
    if (!(await confirmDialog(`Delete snapshot ${snap}?`, "This cannot be undone."))) return;
    try {
      await request("DELETE", `${path}/snapshots/${encodeURIComponent(snap)}`, { query: inProject() });
    } catch (err) {
      notify(err.message);
    }
    showTab("snapshots");
  }

  const terminal = (box) => shell(box, "exec");
  const serial = (box) => shell(box, "console");

  const onEvent = (ev) => {
    const e = ev.detail;
    if (e.type !== "lifecycle" || e.metadata?.name !== name) return;
    if (e.metadata.action === "instance-deleted") {
      location.hash = "#/instances";
      return;
    }
    const before = inst.state;
    reload().then(() => {
      if (before !== inst.state && (current === "terminal" || current === "console")) showTab(current);
    });
  };
  window.addEventListener("cumulo-event", onEvent);
  header();
  showTab(current);
  return () => {
    window.removeEventListener("cumulo-event", onEvent);
    if (closeTab) closeTab();
  };
}
