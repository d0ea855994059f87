// A small line plot on a canvas (no chart library): one or two series over time.

import { h } from "./ui.js";

const COLORS = ["#3b82f6", "#f59e0b"];

/** A plot element; call .update(times, [series...], formatter) with new data. */
export function plot(title, labels) {
  const canvas = h("canvas", { width: 560, height: 160, role: "img", "aria-label": title });
  const caption = h("figcaption", h("strong", title), " ",
    labels.map((l, i) => h("span.legend", { style: `--c:${COLORS[i]}` }, l)));
  const now = h("span.now");
  const fig = h("figure.plot", { dataset: { points: "0" } }, caption, canvas, now);
  fig.update = (times, series, fmt) => {
    fig.dataset.points = String(times.length);
    draw(canvas, times, series, fmt);
    const last = series.map((s) => s[s.length - 1]).filter((v) => v !== null && v !== undefined);
    now.textContent = last.length ? `now: ${last.map(fmt).join(" / ")}` : "no readings yet";
  };
  return fig;
}

function draw(canvas, times, series, fmt) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 560;
  const ht = canvas.clientHeight || 160;
  canvas.width = w * dpr;
  canvas.height = ht * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, ht);
  const pad = { l: 64, r: 8, t: 8, b: 18 };
  const values = series.flat().filter((v) => v !== null && Number.isFinite(v));
  const max = Math.max(1e-9, ...values) * 1.1;
  const t0 = times[0] ?? 0;
  const t1 = Math.max(times[times.length - 1] ?? 1, t0 + 1);
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (w - pad.l - pad.r);
  const y = (v) => ht - pad.b - (v / max) * (ht - pad.t - pad.b);
  g.strokeStyle = "#2a3340";
  g.fillStyle = "#8a94a6";
  g.font = "11px system-ui, sans-serif";
  g.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    const v = (max / 1.1) * f;
    g.beginPath();
    g.moveTo(pad.l, y(v));
    g.lineTo(w - pad.r, y(v));
    g.stroke();
    g.fillText(fmt(v), 4, y(v) + 4);
  }
  if (times.length) {
    const span = Math.round(t1 - t0);
    g.fillText(`last ${span >= 120 ? `${Math.round(span / 60)} min` : `${span} s`}`, pad.l, ht - 4);
  }
  series.forEach((s, i) => {
    g.strokeStyle = COLORS[i];
    g.lineWidth = 2;
    g.beginPath();
    let started = false;
    s.forEach((v, j) => {
      if (v === null || !Number.isFinite(v)) {
        started = false;
        return;
      }
      if (!started) g.moveTo(x(times[j]), y(v));
      else g.lineTo(x(times[j]), y(v));
      started = true;
    });
    g.stroke();
  });
}
