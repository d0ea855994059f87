// CPU and memory of every instance from one scrape of /1.0/metrics (the Prometheus text
// format): one request for the whole list, however many instances it has. Admins only:
// for other roles the columns stay empty after one refusal.

import { auth, request } from "./api.js";

const WANTED = /^(cumulo_cpu_seconds_total|cumulo_memory_usage_bytes)\{([^}]*)\}\s+(\S+)/gm;
const LABEL = /(\w+)="((?:[^"\\]|\\.)*)"/g;

/** name -> {cpu_seconds, memory_bytes, time} of the instances of `project`. */
let refusedTo = null;   // the token /1.0/metrics refused (admins only): not asked again
export async function usageOf(project) {
  if (refusedTo !== null && refusedTo === auth.token()) return new Map();
  let text;
  try {
    text = await request("GET", "/metrics", { text: true });
  } catch (err) {
    if (err.status === 403) refusedTo = auth.token();
    throw err;
  }
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
