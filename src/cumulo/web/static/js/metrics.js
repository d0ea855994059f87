// CPU and memory of every instance from one scrape of /1.0/metrics (the Prometheus text
// format): one request for the whole list, however many instances it has.

import { request } from "./api.js";

const WANTED = /^(cumulo_cpu_seconds_total|cumulo_memory_usage_bytes)\{([^}]*)\}\s+(\S+)/gm;
const LABEL = /(\w+)="((?:[^"\\]|\\.)*)"/g;

/** name -> {cpu_seconds, memory_bytes, time} of the instances of `project`. */
export async function usageOf(project) {
  const text = await request("GET", "/metrics", { text: true });
  const time = Date.now() / 1000;
  const out = new Map();
  for (const [, metric, labelText, value] of text.matchAll(WANTED)) {
    const labels = Object.fromEntries([...labelText.matchAll(LABEL)].map(([, k, v]) => [k, v]));
    if (labels.project !== project) continue;
    const entry = out.get(labels.name) || { cpu_seconds: null, memory_bytes: null, time };
    if (metric === "cumulo_cpu_seconds_total") entry.cpu_seconds = Number(value);
    else entry.memory_bytes = Number(value);
    out.set(labels.name, entry);
  }
  return out;
}
