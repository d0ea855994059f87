// Launch: image, type, limits, network and SSH key; the API's one-line error is shown as is.

import { follow, get, inProject, request } from "../api.js";
import { h, notify } from "../ui.js";

export async function render(view) {
  const [server, images, networks] = await Promise.all([
    get(""), get("/images", { query: inProject() }).catch(() => []), get("/networks", { query: inProject() }).catch(() => []),
  ]);
  const field = (label, input, help) => h("label.field", h("span", label), input, help ? h("small.help", help) : null);
  const name = h("input", { name: "name", required: true, autocomplete: "off", placeholder: "web1", autofocus: true });
  const image = h("input", { name: "image", required: true, list: "image-list", value: images[0]?.aliases?.[0] || "busybox" });
  const imageList = h("datalist#image-list", images.flatMap((i) => (i.aliases.length ? i.aliases : [i.fingerprint.slice(0, 12)]).map((a) => h("option", { value: a }))));
  const type = h("select", { name: "type" }, server.instance_types.map((t) => h("option", { value: t, selected: t === "container" }, t)));
  const machine = h("select", { name: "machine" },
    [["", "default (microvm: fastest boot, no hot-plug)"], ["pc", "pc (PCI: hot-plug)"], ["q35", "q35"]]
      .map(([v, label]) => h("option", { value: v }, label)));
  const machineField = field("VM machine", machine);
  const showMachine = () => { machineField.hidden = type.value !== "vm"; };
  type.addEventListener("change", showMachine);
  const cpu = h("input", { name: "cpu", inputmode: "decimal", placeholder: "e.g. 0.5" });
  const memory = h("input", { name: "memory", placeholder: "e.g. 256MiB" });
  const disk = h("input", { name: "disk", placeholder: "e.g. 2GiB" });
  const network = h("select", { name: "network" },
    h("option", { value: "" }, "the project's default network, if any"),
    h("option", { value: "none" }, "none (loopback only)"),
    networks.map((n) => h("option", { value: n.name }, `${n.name} (${n.subnet})`)));
  const sshKey = h("textarea", { name: "ssh_key", rows: 2, placeholder: "ssh-ed25519 AAAA… (VMs)" });
  const command = h("input", { name: "command", placeholder: "optional, e.g. sh -c 'sleep 1000'" });
  const startBox = h("input", { type: "checkbox", name: "start", checked: true });
  const error = h("p.msg.error#launch-error", { role: "alert", hidden: true });
  const progress = h("p.progress-line", { "aria-live": "polite" });
  const submit = h("button.primary", { type: "submit" }, "Launch");

  const form = h("form.launch.card", { async onsubmit(ev) {
    ev.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    const body = { name: name.value.trim(), image: image.value.trim(), type: type.value, start: startBox.checked, limits: {} };
    if (cpu.value.trim()) body.limits.cpu = Number(cpu.value.trim());
    if (memory.value.trim()) body.limits.memory = memory.value.trim();
    if (disk.value.trim()) body.disk = disk.value.trim();
    if (network.value === "none") body.networks = [];
    else if (network.value) body.networks = [{ network: network.value }];
    if (sshKey.value.trim()) body.ssh_key = sshKey.value.trim();
    if (type.value === "vm" && machine.value) body.options = { machine: machine.value };
    if (command.value.trim()) body.command = splitWords(command.value.trim());
    try {
      const op = await request("POST", "/instances", { body, query: inProject() });
      await follow(op, (o) => {
        progress.textContent = `${o.description}: ${o.status}${o.message ? ` — ${o.message}` : ""}`;
      });
      notify(`Launched ${body.name}`, "ok");
      location.hash = `#/instances/${encodeURIComponent(body.name)}`;
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      progress.textContent = "";
      error.focus();
    } finally {
      submit.disabled = false;
    }
  } },
  h("h1", "Launch an instance"),
  h("div.grid",
    field("Name", name), field("Image", image, "an alias or fingerprint (see Images)"), imageList,
    field("Type", type), field("Network", network), machineField,
    field("CPUs", cpu, "fractions allowed"), field("Memory", memory),
    field("Root disk cap", disk), field("Command", command, "PID 1; default: the image's")),
  field("SSH public key", sshKey, "VMs: authorized_keys lines for root in the guest"),
  h("label.check", startBox, " start it now"),
  error, progress,
  h("div.row", submit, h("a.button.secondary", { href: "#/instances" }, "Cancel")));
  error.tabIndex = -1;
  showMachine();
  view.append(form);
  name.focus();
}

/** Words as a shell would split them, for the simple cases (quotes, no escapes). */
export function splitWords(text) {
  const out = [];
  for (const m of text.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)) out.push(m[1] ?? m[2] ?? m[3]);
  return out;
}
