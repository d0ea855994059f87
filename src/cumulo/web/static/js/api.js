// The daemon's REST API and websockets, and the only place that knows how the console
// signs in (a bearer token kept in sessionStorage): identities and roles change only this.

const KEY = "cumulo.token";
const PROJECT_KEY = "cumulo.project";

export class ApiError extends Error {
  constructor(message, status, type) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

export const auth = {
  token: () => sessionStorage.getItem(KEY),
  set: (token) => sessionStorage.setItem(KEY, token),
  clear: () => sessionStorage.removeItem(KEY),
  // `cumulo ui` opens /ui/#token=...: take it, then drop it from the address bar
  fromFragment() {
    const m = location.hash.match(/^#token=([\w-]+)/);
    if (!m) return false;
    this.set(m[1]);
    history.replaceState(null, "", location.pathname + "#/instances");
    return true;
  },
  header() {
    const t = this.token();
    return t ? { Authorization: `Bearer ${t}` } : {};
  },
  // a browser cannot set headers on a websocket: the token rides in a subprotocol
  protocols() {
    const t = this.token();
    return t ? ["cumulo", `bearer.${t}`] : ["cumulo"];
  },
};

export const project = {
  get: () => sessionStorage.getItem(PROJECT_KEY) || "default",
  set: (name) => sessionStorage.setItem(PROJECT_KEY, name || "default"),
};

let onUnauthorized = () => {};
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

/** One request; resolves to the parsed JSON (or text), rejects with ApiError. */
export async function request(method, path, { body, query, text = false, raw = false } = {}) {
  const url = new URL(`/1.0${path}`, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null) url.searchParams.set(k, v);
  }
  const headers = { ...auth.header() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(`cannot reach cumulod: ${err.message}`, 0, "Unreachable");
  }
  if (resp.status === 401) onUnauthorized();
  if (!resp.ok) {
    let msg = `${resp.status} ${resp.statusText}`;
    let type = "HTTPError";
    try {
      const data = await resp.json();
      msg = data.error || msg;
      type = data.type || type;
    } catch {
      /* not JSON: keep the status line */
    }
    throw new ApiError(msg, resp.status, type);
  }
  if (raw) return resp;
  if (resp.status === 204) return null;
  return text ? resp.text() : resp.json();
}

export const get = (path, opts) => request("GET", path, opts);
export const inProject = (extra = {}) => ({ project: project.get(), ...extra });

/** Follow an operation to its end (bounded); calls onProgress with each state. */
export async function follow(op, onProgress = () => {}, timeoutSeconds = 600) {
  const deadline = Date.now() + timeoutSeconds * 1000;
  onProgress(op);
  while (op.status !== "success" && op.status !== "failure") {
    if (Date.now() > deadline) throw new ApiError(`operation ${op.id} still running`, 0, "Timeout");
    op = await get(`/operations/${op.id}`, { query: inProject({ wait: 2 }) });
    onProgress(op);
  }
  if (op.status === "failure") throw new ApiError(op.error || "operation failed", 500, "OperationError");
  return op;
}

/** A websocket on the API, authenticated the browser's way. */
export function socket(path, query = {}) {
  const url = new URL(`/1.0${path}`, location.origin);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null) url.searchParams.set(k, v);
  }
  const ws = new WebSocket(url, auth.protocols());
  ws.binaryType = "arraybuffer";
  return ws;
}

let featureList = null;
/** What this daemon offers the console (/ui/features.json): {xterm, projects}. */
export function features() {
  featureList ??= fetch(new URL("features.json", document.baseURI)).then((r) => r.json()).catch(() => ({}));
  return featureList;
}

/** fingerprint -> a readable name (its first alias, else the fingerprint's start). */
export async function imageNames() {
  const images = await get("/images", { query: inProject() }).catch(() => []);
  const names = new Map(images.map((i) => [i.fingerprint, i.aliases[0] || i.fingerprint.slice(0, 12)]));
  return (ref) => names.get(ref) || (/^[0-9a-f]{64}$/.test(ref) ? ref.slice(0, 12) : ref);
}
