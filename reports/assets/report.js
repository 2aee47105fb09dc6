/* isobench report: draws the charts from the embedded JSON with ECharts and builds the
   CSV download. Every string from the data goes through esc() before it reaches HTML
   (tooltips); axis labels are drawn as SVG text nodes. Each chart container gets
   data-rendered="1" after the chart's `finished` event (tests and print rely on it). */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("isobench-data").textContent);
  var charts = [];
  /* the same stack as the CSS: ECharts measures labels with it (containLabel) */
  var FONT = getComputedStyle(document.body).fontFamily || "sans-serif";
  var PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
    "#ff9da7", "#9c755f", "#e15759", "#bab0ac"];

  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function fmt(x) {
    if (x == null || !isFinite(x)) return "–";
    if (x === 0) return "0";
    var a = Math.abs(x);
    if (a >= 1000) return Math.round(x).toLocaleString("en-US");
    if (a < 1e-3) return x.toPrecision(3);
    var dec = Math.max(0, 2 - Math.floor(Math.log10(a)));
    return x.toFixed(dec);
  }
  var TIME = { ns: 1e-9, us: 1e-6, "µs": 1e-6, ms: 1e-3, s: 1 };
  function timeScale(values, unit) {
    if (!(unit in TIME)) return { f: 1, unit: unit };
    var vs = values.filter(function (v) { return v != null && isFinite(v) && v !== 0; })
      .map(Math.abs);
    if (!vs.length) return { f: 1, unit: unit };
    var sec = Math.min.apply(null, vs) * TIME[unit];
    var steps = [["s", 1], ["ms", 1e-3], ["µs", 1e-6], ["ns", 1e-9]];
    for (var i = 0; i < steps.length; i++) {
      if (sec >= steps[i][1] || i === steps.length - 1) {
        return { f: TIME[unit] / steps[i][1], unit: steps[i][0] };
      }
    }
  }
  function color(i) { return PALETTE[i % PALETTE.length]; }
  function truncate(s, n) { s = String(s); return s.length > n ? s.slice(0, n - 1) + "…" : s; }

  function mount(el, option) {
    try {
      var chart = echarts.init(el, null, { renderer: "svg" });
      chart.on("finished", function () { el.setAttribute("data-rendered", "1"); });
      option.animation = false;
      option.textStyle = { fontFamily: FONT };
      chart.setOption(option);
      charts.push(chart);
    } catch (e) {
      el.setAttribute("data-rendered", "error");
      el.textContent = "This chart could not be drawn: " + e;
      console.error("isobench chart", e);
    }
  }
  // environment names under a chart: slanted when there are several, so they never overlap
  function slanted(envs) {
    var chars = envs.reduce(function (n, v) { return n + Math.min(String(v).length, 22); }, 0);
    return chars > 8 * envs.length || envs.length > 4;
  }
  function envLabels(envs) {
    return { interval: 0, rotate: slanted(envs) ? 30 : 0,
      formatter: function (v) { return truncate(v, 22); } };
  }


  /* median + CI as an error bar with caps and a diamond; `dx` shifts it sideways (px) */
  function errorBar(dx, col) {
    return function (params, api) {
      var x = api.value(0), lo = api.value(1), med = api.value(2), hi = api.value(3);
      var pm = api.coord([x, med]), pl = api.coord([x, lo]), ph = api.coord([x, hi]);
      var cx = pm[0] + dx, w = 6, style = { stroke: col, lineWidth: 2, fill: col };
      var kids = [];
      if (isFinite(lo) && isFinite(hi) && lo != null && hi != null) {
        kids.push({ type: "line", shape: { x1: cx, y1: pl[1], x2: cx, y2: ph[1] }, style: style });
        kids.push({ type: "line", shape: { x1: cx - w, y1: pl[1], x2: cx + w, y2: pl[1] }, style: style });
        kids.push({ type: "line", shape: { x1: cx - w, y1: ph[1], x2: cx + w, y2: ph[1] }, style: style });
      }
      kids.push({ type: "polygon", shape: { points: [[cx, pm[1] - 6], [cx + 6, pm[1]], [cx, pm[1] + 6], [cx - 6, pm[1]]] },
        style: { fill: col, stroke: "#fff", lineWidth: 1 } });
      return { type: "group", children: kids };
    };
  }

  function opChart(el, c) {
    var envs = c.series.map(function (s) { return s.env; });
    var all = [];
    c.series.forEach(function (s) { all.push(s.median); });
    var sc = timeScale(all, c.unit), f = sc.f;
    var pts = [], seed = 1;
    function rnd() { seed = (seed * 16807) % 2147483647; return (seed - 1) / 2147483646; }
    c.series.forEach(function (s, i) {
      s.points.forEach(function (v) { pts.push([i + (rnd() - 0.5) * 0.5, v * f]); });
    });
    var tip = function (p) {
      var s = c.series[p.dataIndex != null && p.seriesType !== "scatter" ? p.dataIndex : Math.round(p.value[0])];
      if (!s) return "";
      return "<b>" + esc(s.env) + "</b><br>median " + esc(fmt(s.median * f)) + " " + esc(sc.unit) +
        " [" + esc(fmt(s.ci_low * f)) + ", " + esc(fmt(s.ci_high * f)) + "]<br>quartiles " +
        esc(fmt(s.box[1] * f)) + " – " + esc(fmt(s.box[3] * f)) + "; n = " + esc(s.n) +
        (s.ratio != null ? "<br>ratio ×" + esc(fmt(s.ratio)) + (s.significant ? " (significant)" : " (n.s.)") : "");
    };
    mount(el, {
      grid: { left: 64, right: 16, top: 26, bottom: slanted(envs) ? 96 : 48 },
      tooltip: { trigger: "item", formatter: tip, confine: true },
      xAxis: [
        { type: "category", data: envs, axisLabel: envLabels(envs) },
        { type: "value", min: -0.5, max: envs.length - 0.5, show: false }
      ],
      yAxis: { type: c.log ? "log" : "value", name: sc.unit, scale: true,
        nameTextStyle: { align: "right" }, axisLabel: { formatter: function (v) { return fmt(v); } } },
      series: [
        { type: "boxplot", name: "distribution", data: c.series.map(function (s) { return s.box.map(function (v) { return v * f; }); }),
          itemStyle: { color: "#e8eef6", borderColor: "#8aa1c1" }, boxWidth: ["20%", "45%"], z: 1 },
        { type: "scatter", name: "samples", xAxisIndex: 1, data: pts, symbolSize: 4,
          itemStyle: { color: "rgba(40,40,40,0.35)" }, z: 2 },
        { type: "custom", name: "median and 95% CI", renderItem: errorBar(0, "#c0392b"), z: 3,
          encode: { x: 0, y: [1, 2, 3] },
          data: c.series.map(function (s, i) { return [i, s.ci_low * f, s.median * f, s.ci_high * f]; }) }
      ]
    });
  }

  function heatColor(v) { /* v = log2(cost); >0 worse (red), <0 better (blue) */
    var t = Math.max(-1, Math.min(1, v / 2));
    var a = Math.abs(t), base = [255, 255, 255];
    var end = t > 0 ? [200, 40, 40] : [40, 90, 190];
    var c = base.map(function (b, i) { return Math.round(b + (end[i] - b) * (0.25 + 0.75 * a)); });
    return "rgb(" + c.join(",") + ")";
  }

  function heatmap(el) {
    var H = D.heatmap;
    var data = H.cells.map(function (c) {
      var item = { value: [c.x, c.y, c.value], cell: c };
      if (c.significant) {
        item.itemStyle = { color: heatColor(c.value) };
      } else {
        item.itemStyle = { color: "#ececec", decal: { symbol: "rect", dashArrayX: [1, 0],
          dashArrayY: [2, 5], rotation: Math.PI / 4, color: "rgba(0,0,0,0.12)" } };
      }
      return item;
    });
    mount(el, {
      grid: { left: 196, right: 12, top: 150, bottom: 8 },
      tooltip: { confine: true, formatter: function (p) {
        var c = p.data.cell, col = H.columns[c.x];
        return "<b>" + esc(H.envs[c.y]) + "</b> vs " + esc(D.baseline) + "<br>" + esc(col.label) +
          "<br>ratio ×" + esc(fmt(c.ratio)) + " [" + esc(fmt(c.lo)) + ", " + esc(fmt(c.hi)) + "]" +
          "<br>" + esc(c.better) + " is better; " + (c.significant ? "significant" : "not significant") +
          " (p<sub>Holm</sub> = " + esc(c.p == null ? "–" : fmt(c.p)) + ")";
      } },
      xAxis: { type: "category", data: H.columns.map(function (c) { return c.label; }), position: "top",
        axisLabel: { rotate: 40, interval: 0, fontSize: 11, width: 190, overflow: "truncate" },
        splitArea: { show: false } },
      yAxis: { type: "category", data: H.envs, inverse: true,
        axisLabel: { width: 180, overflow: "truncate" } },
      series: [{ type: "heatmap", data: data,
        label: { show: true, fontSize: 11, lineHeight: 14, formatter: function (p) {
          var c = p.data.cell; return "×" + fmt(c.ratio) + (c.significant ? "" : "\nn.s.");
        } },
        itemStyle: { borderColor: "#fff", borderWidth: 2 } }]
    });
  }

  function startup(el) {
    var S = D.startup, envs = S.envs.map(function (e) { return e.env; });
    function med(e, p) { var x = e.phases[p]; return x ? x.median : null; }
    var segs = S.has_boot ?
      [["VMM start", function (e) { return med(e, "boot_ms") != null ? med(e, "ready_ms") - med(e, "boot_ms") : null; }],
       ["guest boot", function (e) { return med(e, "boot_ms"); }],
       ["submit → ready", function (e) { return med(e, "boot_ms") == null ? med(e, "ready_ms") : null; }]] :
      [["submit → ready", function (e) { return med(e, "ready_ms"); }]];
    segs = segs.concat([
      ["ready → exit", function (e) { var a = med(e, "exit_ms"), b = med(e, "ready_ms"); return a != null && b != null ? a - b : null; }],
      ["exit → cleaned", function (e) { var a = med(e, "cleaned_ms"), b = med(e, "exit_ms"); return a != null && b != null ? a - b : null; }]
    ]);
    var colors = ["#4e79a7", "#a0cbe8", "#f28e2b", "#59a14f", "#bab0ac"];
    mount(el, {
      legend: { top: 0, itemGap: 24 },
      grid: { left: 196, right: 40, top: 34, bottom: 24 },
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" }, confine: true, formatter: function (ps) {
        var e = S.envs[ps[0].dataIndex], out = "<b>" + esc(e.env) + "</b> (median ms since submit, 95% CI)";
        ["boot_ms", "ready_ms", "exit_ms", "cleaned_ms"].forEach(function (p) {
          var x = e.phases[p];
          if (x) out += "<br>" + esc(p) + ": " + esc(fmt(x.median)) + " [" + esc(fmt(x.ci_low)) + ", " + esc(fmt(x.ci_high)) + "]";
        });
        return out;
      } },
      xAxis: { type: "value", name: "ms", nameGap: 8, axisLabel: { formatter: function (v) { return fmt(v); } } },
      yAxis: { type: "category", data: envs, inverse: true, axisLabel: { width: 180, overflow: "truncate" } },
      series: segs.map(function (s, i) {
        return { type: "bar", stack: "t", name: s[0], itemStyle: { color: colors[i % colors.length] },
          data: S.envs.map(function (e) { var v = s[1](e); return v == null ? null : Math.max(0, v); }) };
      })
    });
  }

  function footprint(el, c) {
    var envs = [], wls = [];
    c.series.forEach(function (r) {
      if (envs.indexOf(r.env) < 0) envs.push(r.env);
      if (wls.indexOf(r.workload) < 0) wls.push(r.workload);
    });
    var sc = timeScale(c.series.map(function (r) { return r.median; }), c.unit), f = sc.f;
    var step = Math.min(18, 120 / Math.max(1, wls.length));
    mount(el, {
      legend: { top: 0, data: wls },
      grid: { left: 64, right: 16, top: 30, bottom: slanted(envs) ? 96 : 40 },
      tooltip: { trigger: "item", confine: true, formatter: function (p) {
        var r = p.data.row;
        return "<b>" + esc(r.env) + "</b> · " + esc(r.workload) + "<br>" + esc(r.metric) + ": " +
          esc(fmt(r.median * f)) + " " + esc(sc.unit) + " [" + esc(fmt(r.ci_low * f)) + ", " +
          esc(fmt(r.ci_high * f)) + "]; n = " + esc(r.n);
      } },
      xAxis: { type: "category", data: envs, axisLabel: envLabels(envs) },
      yAxis: { type: "value", name: sc.unit, scale: true, axisLabel: { formatter: function (v) { return fmt(v); } } },
      series: wls.map(function (w, j) {
        return { type: "custom", name: w, itemStyle: { color: color(j) },
          renderItem: errorBar((j - (wls.length - 1) / 2) * step, color(j)), encode: { x: 0, y: [1, 2, 3] },
          data: c.series.filter(function (r) { return r.workload === w; }).map(function (r) {
            return { value: [envs.indexOf(r.env), r.ci_low * f, r.median * f, r.ci_high * f], row: r };
          }) };
      })
    });
  }

  /* compare: change % from A to B with its CI per cell; red = regression */
  function forest(el) {
    var C = D.cells.filter(function (c) { return c.change_pct != null; });
    var labels = C.map(function (c) { return c.env + " · " + c.workload + " · " + c.op + " · " + c.metric; });
    var col = { regression: "#b3261e", improvement: "#2456a6" };
    mount(el, {
      grid: { left: 12, right: 24, top: 16, bottom: 30, containLabel: true },
      tooltip: { trigger: "item", confine: true, formatter: function (p) {
        var c = C[p.dataIndex];
        return "<b>" + esc(labels[p.dataIndex]) + "</b><br>change " + esc(fmt(c.change_pct)) + " % [" +
          esc(fmt(c.change_ci_low)) + ", " + esc(fmt(c.change_ci_high)) + "]<br>" + esc(c.verdict);
      } },
      xAxis: { type: "value", name: "%", axisLabel: { formatter: function (v) { return fmt(v); } } },
      yAxis: { type: "category", data: labels, inverse: true,
        axisLabel: { interval: 0, fontSize: 11, formatter: function (v) { return truncate(v, 48); } } },
      series: [{ type: "custom", renderItem: function (params, api) {
        var y = api.value(0), lo = api.value(1), m = api.value(2), hi = api.value(3);
        var a = api.coord([lo, y]), b = api.coord([hi, y]), c = api.coord([m, y]);
        var k = col[C[params.dataIndex].verdict] || "#777", st = { stroke: k, lineWidth: 2 };
        return { type: "group", children: [
          { type: "line", shape: { x1: a[0], y1: a[1], x2: b[0], y2: b[1] }, style: st },
          { type: "circle", shape: { cx: c[0], cy: c[1], r: 4 }, style: { fill: k } }] };
      }, encode: { x: [1, 2, 3], y: 0 },
        data: C.map(function (c, i) { return [i, c.change_ci_low, c.change_pct, c.change_ci_high]; }),
        markLine: { silent: true, symbol: "none", lineStyle: { color: "#999", type: "dashed" },
          data: [{ xAxis: 0 }, { xAxis: D.threshold }, { xAxis: -D.threshold }] } }]
    });
  }

  function csv() {
    var S = D.samples, cols = S.columns, out = [cols.join(",")];
    function cell(v) {
      if (v == null) return "";
      var s = String(v);
      return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
    }
    for (var i = 0; i < S.n; i++) {
      var row = [];
      for (var j = 0; j < cols.length; j++) {
        var c = S.data[cols[j]];
        row.push(cell(c.num ? c.num[i] : c.dict[c.codes[i]]));
      }
      out.push(row.join(","));
    }
    return out.join("\n") + "\n";
  }

  var byId = {};
  (D.charts || []).forEach(function (c) { byId[c.id] = c; });
  ((D.footprint || {}).charts || []).forEach(function (c) { byId[c.id] = c; });
  Array.prototype.forEach.call(document.querySelectorAll("[data-chart]"), function (el) {
    var kind = el.getAttribute("data-chart");
    if (kind === "heatmap") heatmap(el);
    else if (kind === "startup") startup(el);
    else if (kind === "op") opChart(el, byId[el.getAttribute("data-id")]);
    else if (kind === "footprint") footprint(el, byId[el.getAttribute("data-id")]);
    else if (kind === "forest") forest(el);
  });

  var btn = document.getElementById("download-csv");
  if (btn && D.samples) btn.addEventListener("click", function () {
    var blob = new Blob([csv()], { type: "text/csv" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "isobench-" + (D.run.run_id || "run") + "-samples.csv";
    document.body.appendChild(a); a.click(); a.remove();
  });

  function resizeAll() { charts.forEach(function (c) { c.resize(); }); }
  window.addEventListener("resize", resizeAll);
  window.addEventListener("beforeprint", function () {
    Array.prototype.forEach.call(document.querySelectorAll("details"), function (d) { d.open = true; });
    resizeAll();
  });
  if (window.matchMedia) {
    var mq = window.matchMedia("print");
    if (mq.addEventListener) mq.addEventListener("change", resizeAll);
  }
  window.isobenchCsv = csv;
})();
