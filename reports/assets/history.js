/* isobench history: one trend chart per figure (ratio and baseline per run with CIs,
   change points and version changes as vertical lines). Reads the JSON data blob. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("isobench-data").textContent);
  var RATIO = "#3b6fb6", BASE = "#888888";

  function bars(points, axis, col, dx) {
    return {
      type: "custom", yAxisIndex: axis, silent: true, z: 3,
      data: points.map(function (p, i) {
        return p ? [i, p.ci_low, p.value, p.ci_high] : [i, null, null, null];
      }),
      renderItem: function (params, api) {
        var lo = api.value(1), hi = api.value(3);
        if (lo == null || hi == null || !isFinite(lo) || !isFinite(hi)) return null;
        var a = api.coord([api.value(0), lo]), b = api.coord([api.value(0), hi]);
        var x = a[0] + dx, st = { stroke: col, lineWidth: 1.5 };
        return { type: "group", children: [
          { type: "line", shape: { x1: x, y1: a[1], x2: x, y2: b[1] }, style: st },
          { type: "line", shape: { x1: x - 4, y1: a[1], x2: x + 4, y2: a[1] }, style: st },
          { type: "line", shape: { x1: x - 4, y1: b[1], x2: x + 4, y2: b[1] }, style: st }] };
      }
    };
  }

  function marks(f) {
    var out = [];
    D.runs.forEach(function (r, i) {
      if (!r.changes.length) return;
      var bundle = r.changes.some(function (c) { return c.what === "probe bundle"; });
      out.push({ xAxis: i, lineStyle: { type: "dotted", color: bundle ? "#c0392b" : "#999" },
        label: { formatter: bundle ? "bundle" : "changed", fontSize: 10 } });
    });
    f.change_points.forEach(function (c) {
      out.push({ xAxis: c.index, lineStyle: { type: "solid", width: 2,
        color: c.series === "ratio" ? "#d35400" : "#7f8c8d" },
        label: { formatter: (c.series === "ratio" ? "cost " : "host ") +
          (c.magnitude * 100).toFixed(0) + "%", fontSize: 10, position: "insideEndTop" } });
    });
    return out;
  }

  function si(v) {
    var a = Math.abs(v), units = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (var i = 0; i < units.length; i++) {
      if (a >= units[i][0]) return String(+(v / units[i][0]).toPrecision(3)) + units[i][1];
    }
    return String(+v.toPrecision(3));
  }

  /* an axis that holds every point and its CI */
  function extent(points) {
    var lo = Infinity, hi = -Infinity;
    points.forEach(function (p) {
      if (!p) return;
      [p.ci_low, p.value, p.ci_high].forEach(function (v) {
        if (v != null && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      });
    });
    if (!isFinite(lo)) return {};
    var pad = (hi - lo) * 0.05 || Math.abs(hi) * 0.05 || 1;
    return { min: Math.max(0, lo - pad), max: hi + pad,
      axisLabel: { formatter: si } };
  }

  function chart(el, f) {
    var runs = D.runs.map(function (r, i) { return String(i + 1); });
    var value = function (p) { return p ? p.value : null; };
    var option = {
      animation: false,
      grid: { left: 60, right: 80, top: 40, bottom: 40 },
      legend: { top: 0, data: ["ratio to " + D.baseline, D.baseline + " median"] },
      tooltip: { trigger: "axis" },
      xAxis: { type: "category", data: runs, name: "run" },
      yAxis: [Object.assign({ type: "value", scale: true, name: "ratio" }, extent(f.ratio)),
        Object.assign({ type: "value", scale: true, name: f.unit, splitLine: { show: false } },
          extent(f.base))],
      series: [
        { name: "ratio to " + D.baseline, type: "line", yAxisIndex: 0, connectNulls: false,
          data: f.ratio.map(value), itemStyle: { color: RATIO }, symbolSize: 6,
          markLine: { symbol: "none", silent: true, data: marks(f) } },
        { name: D.baseline + " median", type: "line", yAxisIndex: 1, data: f.base.map(value),
          itemStyle: { color: BASE }, lineStyle: { type: "dashed" }, symbolSize: 5 },
        bars(f.ratio, 0, RATIO, -3), bars(f.base, 1, BASE, 3)
      ]
    };
    try {
      var c = echarts.init(el, null, { renderer: "svg" });
      c.on("finished", function () { el.setAttribute("data-rendered", "1"); });
      c.setOption(option);
    } catch (e) {
      el.setAttribute("data-rendered", "error");
      el.textContent = "This chart could not be drawn: " + e;
    }
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-chart=trend]"), function (el) {
    chart(el, D.figures[Number(el.getAttribute("data-figure"))]);
  });
})();
