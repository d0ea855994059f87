// A real terminal (xterm.js, from the npm registry at install time) on a websocket:
// an exec session (`/exec-ws`: a tty shell) or a VM's serial console (`/console-ws`).
// Without xterm.js (npm was missing at install) it says so instead.

import { features, inProject, socket } from "./api.js";
import { h } from "./ui.js";

let xterm = null;   // the loaded modules, once

async function loadXterm() {
  if (xterm) return xterm;
  if (!(await features()).xterm) return null;
  const [{ Terminal }, { FitAddon }] = await Promise.all([
    import("../vendor/xterm.mjs"), import("../vendor/addon-fit.mjs")]);
  document.head.append(h("link", { rel: "stylesheet", href: "vendor/xterm.css" }));
  xterm = { Terminal, FitAddon };
  return xterm;
}

const THEME = { background: "#0f1419", foreground: "#e6e1cf", cursor: "#f29718" };
const encoder = new TextEncoder();

/**
 * Open a terminal in `box` on instance `name`. kind "exec": a tty running `command`;
 * kind "console": the serial console. Returns a close function.
 */
export async function openTerminal(box, name, kind, command = ["sh"]) {
  const status = h("p.term-status", { "aria-live": "polite" }, "connecting…");
  const mods = await loadXterm();
  if (!mods) {
    box.replaceChildren(h("p.msg.warn", { role: "status" },
      "The terminal needs xterm.js, which scripts/install.sh takes from the npm registry; npm was not available when it ran. Install Node.js + npm and run scripts/install.sh again. (Logs and everything else work without it.)"));
    return () => {};
  }
  const screen = h("div.term");
  box.replaceChildren(screen, status);
  const term = new mods.Terminal({ fontSize: 14, cursorBlink: true, convertEol: kind === "console", theme: THEME,
    fontFamily: "ui-monospace, 'DejaVu Sans Mono', monospace", scrollback: 5000 });
  const fit = new mods.FitAddon();
  term.loadAddon(fit);
  term.open(screen);
  fit.fit();
  const path = `/instances/${encodeURIComponent(name)}/${kind === "exec" ? "exec-ws" : "console-ws"}`;
  const ws = socket(path, inProject());
  let closed = false;
  ws.onopen = () => {
    if (kind === "exec") ws.send(JSON.stringify({ command, tty: true, rows: term.rows, cols: term.cols, env: { TERM: "xterm-256color" } }));
    status.textContent = kind === "exec" ? `connected: ${command.join(" ")}` : "connected to the serial console (closing this page detaches; the VM keeps running)";
    term.focus();
  };
  ws.onmessage = (msg) => {
    if (typeof msg.data === "string") {
      const ctl = JSON.parse(msg.data);
      if ("exit_code" in ctl) status.textContent = `the command exited with code ${ctl.exit_code}`;
      if (ctl.error) status.textContent = `error: ${ctl.error}`;
      return;
    }
    const bytes = new Uint8Array(msg.data);
    term.write(kind === "exec" ? bytes.subarray(1) : bytes);   // exec frames: 1 stdout, 2 stderr
  };
  ws.onclose = () => {
    if (!closed && !status.textContent.startsWith("the command") && !status.textContent.startsWith("error")) {
      status.textContent = "disconnected";
    }
  };
  const input = term.onData((data) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
  });
  const onResize = () => {
    fit.fit();
  };
  term.onResize(({ rows, cols }) => {
    if (kind === "exec" && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ resize: [rows, cols] }));
  });
  window.addEventListener("resize", onResize);
  return () => {
    closed = true;
    window.removeEventListener("resize", onResize);
    input.dispose();
    ws.close();
    term.dispose();
  };
}
