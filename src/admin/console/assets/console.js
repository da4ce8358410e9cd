// Gregor console: line charts on <canvas data-series=...> (lag per topic, messages per second),
// refreshed from their data-src JSON every few seconds, a topic filter, and the live
// throughput table. No framework, no build step.
"use strict";
(function () {
  const COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"];

  // {"t":[ms...],"series":{name:[v|null...]}} or {name:[[ms,v]...]} -> [{name, points:[[ms,v]]}]
  function normalise(data) {
    if (!data) return [];
    if (data.t && data.series) {
      return Object.keys(data.series).map(function (name) {
        const pts = [];
        data.series[name].forEach(function (v, i) { if (v !== null) pts.push([data.t[i], v]); });
        return { name: name, points: pts };
      });
    }
    const series = data.series || data;
    return Object.keys(series).map(function (name) { return { name: name, points: series[name] }; });
  }

  function draw(canvas, data) {
    const lines = normalise(data);
    const ctx = canvas.getContext("2d");
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
    canvas.width = w * ratio; canvas.height = h * ratio;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = "11px sans-serif";
    let t0 = Infinity, t1 = -Infinity, vmax = 0;
    lines.forEach(function (l) { l.points.forEach(function (p) { t0 = Math.min(t0, p[0]); t1 = Math.max(t1, p[0]); vmax = Math.max(vmax, p[1]); }); });
    const left = 56, right = 150, top = 10, bottom = 22;
    if (!isFinite(t0)) {
      ctx.fillStyle = "#5b6478";
      ctx.fillText("No samples yet: the console samples every 5 seconds.", left, h / 2);
      canvas.dataset.points = "0";
      return;
    }
    if (t1 === t0) t1 = t0 + 1;
    vmax = vmax <= 0 ? 1 : vmax * 1.1;
    const x = function (t) { return left + (w - left - right) * (t - t0) / (t1 - t0); };
    const y = function (v) { return top + (h - top - bottom) * (1 - v / vmax); };
    ctx.strokeStyle = "#e8ebf0"; ctx.fillStyle = "#5b6478";
    for (let i = 0; i <= 4; i++) {
      const v = vmax * i / 4, yy = y(v);
      ctx.beginPath(); ctx.moveTo(left, yy); ctx.lineTo(w - right, yy); ctx.stroke();
      ctx.fillText(v >= 100 ? Math.round(v) : v.toFixed(1), 4, yy + 4);
    }
    const mins = Math.round((t1 - t0) / 60000);
    ctx.fillText(mins > 0 ? "last " + mins + " min" : "last " + Math.round((t1 - t0) / 1000) + " s", left, h - 6);
    let count = 0;
    lines.forEach(function (l, i) {
      ctx.strokeStyle = COLOURS[i % COLOURS.length]; ctx.lineWidth = 2; ctx.beginPath();
      l.points.forEach(function (p, j) { count++; if (j === 0) ctx.moveTo(x(p[0]), y(p[1])); else ctx.lineTo(x(p[0]), y(p[1])); });
      if (l.points.length === 1) { const p = l.points[0]; ctx.arc(x(p[0]), y(p[1]), 2, 0, 7); }
      ctx.stroke();
      ctx.fillStyle = COLOURS[i % COLOURS.length];
      ctx.fillText(l.name, w - right + 8, top + 14 * (i + 1));
    });
    canvas.dataset.points = String(count);
  }

  function refresh(canvas) {
    fetch(canvas.dataset.src, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) { if (d) { draw(canvas, d); updateTable(d); } })
      .catch(function () {});
  }

  function updateTable(d) {
    const table = document.getElementById("throughput");
    if (!table || !d.topics) return;
    Object.keys(d.topics).forEach(function (topic) {
      const row = table.querySelector('tr[data-topic="' + CSS.escape(topic) + '"]');
      if (!row) return;
      const r = d.topics[topic];
      row.querySelector(".messages").textContent = r.messages.toFixed(1);
      row.querySelector(".bytes-in").textContent = Math.round(r.bytes_in);
      row.querySelector(".bytes-out").textContent = Math.round(r.bytes_out);
    });
  }

  document.querySelectorAll("canvas[data-series]").forEach(function (canvas) {
    let initial = null;
    try { initial = JSON.parse(canvas.dataset.series); } catch (e) { initial = null; }
    draw(canvas, initial);
    if (canvas.dataset.src) setInterval(function () { refresh(canvas); }, 5000);
  });

  const filter = document.getElementById("filter");
  if (filter) {
    filter.addEventListener("input", function () {
      const q = filter.value.toLowerCase();
      document.querySelectorAll(filter.dataset.filter).forEach(function (row) {
        row.style.display = row.textContent.toLowerCase().indexOf(q) >= 0 ? "" : "none";
      });
    });
  }
})();
