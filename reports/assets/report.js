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
  /* as bench/report/fmt.py's fmt_num: 3 significant digits, a whole number below 10,000
     written out, larger ones with an SI prefix (150M, 2.40G, 116k) */
  var SI = ["", "k", "M", "G", "T", "P", "E"];
  function sig(x) {
    var dec = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(x))));
    var s = x.toFixed(dec);
    if (dec && s.replace(/^-/, "").replace(".", "").replace(/^0+/, "").length > 3) s = x.toFixed(dec - 1);
    return s;
  }
  function fmt(x) {
    if (x == null || !isFinite(x)) return "–";
    if (x === 0) return "0";
    var a = Math.abs(x);
    if (Math.round(a) >= 10000) {
      var p = Math.min(Math.floor(Math.log10(a) / 3), SI.length - 1);
      var s = sig(x / Math.pow(1000, p));
      if (Math.abs(parseFloat(s)) >= 1000 && p < SI.length - 1) s = sig(x / Math.pow(1000, ++p));
      return s + SI[p];
    }
    if (a >= 1000) return x.toFixed(0);
    if (a < 1e-3) return x.toPrecision(3);
    return sig(x);
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

  /* environment names are never cut nor broken inside a word: wrapped after ":", ",",
     "=", "/" or a space into lines of at most n characters; a longer word has a line of
     its own */
  var BREAK = /(?<=[:,=\/ ])/;
  function wrap(s, n) {
    var lines = [], line = "";
    String(s).split(BREAK).forEach(function (tok) {
      if (line && line.length + tok.length > n) { lines.push(line); line = ""; }
      line += tok;
    });
    if (line) lines.push(line);
    return lines;
  }
  function longestWord(s) {
    return String(s).split(BREAK).reduce(function (m, t) { return Math.max(m, t.length); }, 0);
  }
  var EMULATED = {};
  (D.envs || []).forEach(function (e) { EMULATED[e.label] = e.emulated; });
  var TAG = { emu: { color: "#8a5a00", backgroundColor: "#fff1cc", borderRadius: 3,
    padding: [1, 4], fontSize: 10, fontWeight: 600 } };
  /* an axis label for an environment: its name wrapped, then an "emulated" tag */
  function envLabel(n) {
    return function (v) {
      return wrap(v, n).join("\n") + (EMULATED[v] ? "\n{emu|emulated}" : "");
    };
  }
  function labelLines(envs, n) {
    return envs.reduce(function (m, v) {
      return Math.max(m, wrap(v, n).length + (EMULATED[v] ? 1 : 0));
    }, 1);
  }
  /* the power of ten below the smallest positive value: a log axis's floor */
  function logFloor(values) {
    var pos = values.filter(function (v) { return v > 0; });
    return Math.pow(10, Math.ceil(Math.log10(Math.min.apply(null, pos))) - 1);
  }
  var ctx = document.createElement("canvas").getContext("2d");
  function textWidth(lines, size) {
    ctx.font = size + "px " + FONT;
    return lines.reduce(function (m, l) { return Math.max(m, ctx.measureText(l).width); }, 0);
  }
  /* the x axis of environments under a chart: names wrapped between words to the width of
     a category; where a word is wider than that, every name on one line of its own, turned
     (upright when even a turned line would not clear its neighbour) */
  var LABEL_ROOM = 16 + 14 * 3;
  function envAxis(el, envs, left, right) {
    var per = (el.clientWidth - left - right) / Math.max(1, envs.length);
    var n = Math.max(6, Math.floor(per / 6.6)), ax;
    if (envs.every(function (v) { return longestWord(v) <= n; })) {
      ax = { bottom: 16 + 14 * labelLines(envs, n),
        axisLabel: { interval: 0, fontSize: 11, lineHeight: 14, formatter: envLabel(n), rich: TAG } };
    } else {
      var rotate = per >= 22 ? 40 : 90, rad = rotate * Math.PI / 180;
      var long = textWidth(envs.map(function (v) { return v + (EMULATED[v] ? " emulated" : ""); }), 11);
      ax = { bottom: Math.ceil(16 + long * Math.sin(rad) + 14 * Math.cos(rad)),
        axisLabel: { interval: 0, rotate: rotate, fontSize: 11, lineHeight: 14, rich: TAG,
          formatter: function (v) { return v + (EMULATED[v] ? " {emu|emulated}" : ""); } } };
    }
    /* a turned first name reaches left of its category: the grid's left edge leaves room */
    ax.left = left;
    if (ax.axisLabel.rotate) {
      var first = textWidth([envs[0] + (EMULATED[envs[0]] ? " emulated" : "")], 11);
      ax.left = Math.max(left, Math.ceil(first * Math.cos(rad) - per / 2 + 8));
    }
    /* the plot keeps its height: the chart grows by what its labels take beyond 3 lines */
    if (ax.bottom > LABEL_ROOM) el.style.height = el.clientHeight + ax.bottom - LABEL_ROOM + "px";
    return ax;
  }
  /* a legend above a chart wraps onto more rows when its names do not fit one: the plot
     starts below its last row (`top` is where it starts under a one-row legend) and the
     chart grows by the rows added */
  var LEGEND_ROW = 22;
  function legendTop(el, names, top) {
    var width = el.clientWidth - 10, rows = 1, x = 0;
    names.forEach(function (name) {
      var w = textWidth([name], 12) + 25 + 5;  /* the icon and its gap, then the name */
      if (x && x + w > width) { rows++; x = 0; }
      x += w + 10;  /* the gap to the next item */
    });
    var extra = (rows - 1) * LEGEND_ROW;
    if (extra) el.style.height = el.clientHeight + extra + "px";
    return top + extra;
  }
  /* the y axis of environments beside a chart: wrapped to 24 characters */
  function envSide(envs) {
    var lines = [];
    envs.forEach(function (v) { lines = lines.concat(wrap(v, 24)); });
    return { left: Math.ceil(textWidth(lines, 12)) + 20,
      axisLabel: { fontSize: 12, lineHeight: 14, formatter: envLabel(24), rich: TAG } };
  }

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
  /* median + CI as an error bar with caps and a diamond; `dx` shifts it sideways (px); a
     fifth value 1 means the low end was clipped to a log axis's floor: no cap there */
  function errorBar(dx, col) {
    return function (params, api) {
      var x = api.value(0), lo = api.value(1), med = api.value(2), hi = api.value(3);
      var pm = api.coord([x, med]), pl = api.coord([x, lo]), ph = api.coord([x, hi]);
      var cx = pm[0] + dx, w = 6, style = { stroke: col, lineWidth: 2, fill: col };
      var kids = [];
      if (isFinite(lo) && isFinite(hi) && lo != null && hi != null) {
        kids.push({ type: "line", shape: { x1: cx, y1: pl[1], x2: cx, y2: ph[1] }, style: style });
        if (api.value(4) !== 1) kids.push({ type: "line", shape: { x1: cx - w, y1: pl[1], x2: cx + w, y2: pl[1] }, style: style });
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
      return "<b>" + esc(s.env) + "</b>" + (EMULATED[s.env] ? " (emulated)" : "") + "<br>median " +
        esc(fmt(s.median * f)) + " " + esc(sc.unit) +
        " [" + esc(fmt(s.ci_low * f)) + ", " + esc(fmt(s.ci_high * f)) + "]<br>quartiles " +
        esc(fmt(s.box[1] * f)) + " – " + esc(fmt(s.box[3] * f)) + "; n = " + esc(s.n) +
        (s.ratio != null ? "<br>ratio ×" + esc(fmt(s.ratio)) + (s.significant ? " (" + esc(s.words) + ")" : " (n.s.)") : "") +
        s.flags.map(function (x) { return "<br>⚠ " + esc(x); }).join("");
    };
    var ax = envAxis(el, envs, 64, 16);
    mount(el, {
      grid: { left: ax.left, right: 16, top: 26, bottom: ax.bottom },
      tooltip: { trigger: "item", formatter: tip, confine: true, extraCssText: "max-width: 360px; white-space: normal;" },
      xAxis: [
        { type: "category", data: envs, axisLabel: ax.axisLabel },
        { type: "value", min: -0.5, max: envs.length - 0.5, show: false }
      ],
      yAxis: { type: c.log ? "log" : "value", name: sc.unit, scale: true, axisLine: { onZero: false },
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
        item.itemStyle = { color: c.ratio == null ? "#f7f7f7" : "#ececec", decal: { symbol: "rect", dashArrayX: [1, 0],
          dashArrayY: [2, 5], rotation: Math.PI / 4, color: "rgba(0,0,0,0.12)" } };
      }
      return item;
    });
    var side = envSide(H.envs);
    mount(el, {
      grid: { left: side.left, right: 12, top: 150, bottom: 8 },
      tooltip: { confine: true, extraCssText: "max-width: 380px; white-space: normal;", formatter: function (p) {
        var c = p.data.cell, col = H.columns[c.x];
        var head = "<b>" + esc(H.envs[c.y]) + "</b>" + (EMULATED[H.envs[c.y]] ? " (emulated)" : "") +
          " vs " + esc(D.baseline) + "<br>" + esc(col.label);
        if (c.flags.length) {
          return head + c.flags.map(function (x) { return "<br>⚠ " + esc(x); }).join("");
        }
        if (c.ratio == null) return head + "<br>" + esc(c.note);
        return head + "<br>ratio ×" + esc(fmt(c.ratio)) + " [" + esc(fmt(c.lo)) + ", " + esc(fmt(c.hi)) + "]" +
          "<br>" + esc(c.better) + " is better; " + (c.significant ? esc(c.words) : "not significant") +
          " (adjusted p = " + esc(c.p == null ? "–" : fmt(c.p)) + ")" +
          (c.undetected ? "<br>no detectable difference: " + esc(c.undetected) +
            " (this run could have detected a difference that large)" : "");
      } },
      xAxis: { type: "category", data: H.columns.map(function (c) { return c.label; }), position: "top",
        axisLabel: { rotate: 40, interval: 0, fontSize: 11 }, splitArea: { show: false } },
      yAxis: { type: "category", data: H.envs, inverse: true, axisLabel: side.axisLabel },
      series: [{ type: "heatmap", data: data,
        label: { show: true, fontSize: 11, lineHeight: 14, formatter: function (p) {
          var c = p.data.cell;
          if (c.flags.length) return "⚠\nflagged";
          if (c.ratio == null) return "no\nratio";
          return "×" + fmt(c.ratio) + (c.significant ? "" : "\nn.s.");
        } },
        itemStyle: { borderColor: "#fff", borderWidth: 2 } }]
    });
  }

  /* startup on a log axis: per environment a bar from submit to cleaned whose segments end
     at each phase's median time since submit, and the phases' 95% CIs as whiskers */
  function startup(el) {
    var S = D.startup, envs = S.envs.map(function (e) { return e.env; });
    function ph(e, p) { return e.phases[p] || null; }
    function med(e, p) { var x = ph(e, p); return x ? x.median : null; }
    function vmm(e) { var b = med(e, "boot_ms"), r = med(e, "ready_ms"); return b != null && r != null ? r - b : null; }
    var kinds = (S.has_boot ? [["VMM start", "#4e79a7"], ["guest boot", "#a0cbe8"]] : [])
      .concat([["submit → ready", "#f28e2b"], ["ready → exit", "#59a14f"], ["exit → cleaned", "#bab0ac"]]);
    var lows = [];
    S.envs.forEach(function (e) {
      ["ready_ms", "exit_ms", "cleaned_ms"].forEach(function (p) {
        var x = ph(e, p);
        if (x) lows.push(x.ci_low > 0 ? x.ci_low : x.median);
      });
      if (vmm(e) > 0) lows.push(vmm(e));
    });
    var lo = logFloor(lows);
    /* [y, start, end] for each segment kind; a guest's "submit → ready" is VMM + boot */
    function segments(e, y) {
      var r = med(e, "ready_ms"), x = med(e, "exit_ms"), c = med(e, "cleaned_ms"), v = vmm(e);
      var split = S.has_boot && v != null && v > lo;
      var out = {};
      if (split) { out["VMM start"] = [y, lo, v]; out["guest boot"] = [y, v, r]; }
      else if (r != null) out["submit → ready"] = [y, lo, r];
      if (r != null && x != null) out["ready → exit"] = [y, r, x];
      if (x != null && c != null) out["exit → cleaned"] = [y, x, c];
      return out;
    }
    var segs = S.envs.map(segments);
    function bar(params, api) {
      var a = api.coord([api.value(1), api.value(0)]), b = api.coord([api.value(2), api.value(0)]);
      var h = api.size([0, 1])[1] * 0.5;
      return { type: "rect", shape: { x: a[0], y: a[1] - h / 2, width: Math.max(0, b[0] - a[0]), height: h },
        style: { fill: api.visual("color") } };
    }
    function whiskers(params, api) {
      var y = api.value(0), kids = [], h = api.size([0, 1])[1] * 0.5;
      for (var i = 1; i < 4; i += 2) { /* ready's CI in the upper half, cleaned's in the lower */
        var l = api.value(i), u = api.value(i + 1), dy = (i === 1 ? -1 : 1) * h / 5;
        if (!(l > 0 && u > 0)) continue;
        var a = api.coord([l, y]), b = api.coord([u, y]), st = { stroke: "#333", lineWidth: 1 };
        kids.push({ type: "line", shape: { x1: a[0], y1: a[1] + dy, x2: b[0], y2: b[1] + dy }, style: st });
        kids.push({ type: "line", shape: { x1: a[0], y1: a[1] + dy - h / 6, x2: a[0], y2: a[1] + dy + h / 6 }, style: st });
        kids.push({ type: "line", shape: { x1: b[0], y1: b[1] + dy - h / 6, x2: b[0], y2: b[1] + dy + h / 6 }, style: st });
      }
      var c = api.value(5);
      if (c > 0) {
        var end = api.coord([Math.max(c, api.value(4) || 0), y]);
        kids.push({ type: "text", x: end[0] + 8, y: end[1], style: { text: "cleaned " + fmt(c) + " ms",
          fill: "#333", font: "12px " + FONT, verticalAlign: "middle" } });
      }
      return { type: "group", children: kids };
    }
    function tip(p) {
      var e = S.envs[p.value[0]], out = "<b>" + esc(e.env) + "</b>" + (EMULATED[e.env] ? " (emulated)" : "") +
        "<br>median ms since submit [95% CI]";
      ["boot_ms", "ready_ms", "exit_ms", "cleaned_ms"].forEach(function (k) {
        var x = e.phases[k];
        if (x) out += "<br>" + esc(k === "boot_ms" ? "guest boot (duration)" : k) + ": " + esc(fmt(x.median)) +
          " [" + esc(fmt(x.ci_low)) + ", " + esc(fmt(x.ci_high)) + "]";
      });
      return out;
    }
    var side = envSide(envs);
    mount(el, {
      legend: { top: 0, itemGap: 24 },
      grid: { left: side.left, right: 130, top: 34, bottom: 30 },
      tooltip: { trigger: "item", confine: true, formatter: tip },
      xAxis: { type: "log", min: lo, name: "ms", nameGap: 8,
        axisLabel: { formatter: function (v) { return fmt(v); } } },
      yAxis: { type: "category", data: envs, inverse: true, axisLabel: side.axisLabel },
      series: kinds.map(function (k) {
        return { type: "custom", name: k[0], itemStyle: { color: k[1] }, renderItem: bar, encode: { x: [1, 2], y: 0 },
          data: segs.map(function (sg) { return sg[k[0]]; }).filter(Boolean) };
      }).concat([{ type: "custom", name: "95% CI", silent: false, renderItem: whiskers, encode: { x: [1, 2, 3, 4], y: 0 },
        itemStyle: { color: "#333" },
        data: S.envs.map(function (e, y) {
          var r = ph(e, "ready_ms"), c = ph(e, "cleaned_ms");
          return [y, r ? r.ci_low : null, r ? r.ci_high : null, c ? c.ci_low : null, c ? c.ci_high : null,
            c ? c.median : null];
        }) }])
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
    var ax = envAxis(el, envs, 64, 16);
    /* on a log axis a CI reaching 0 is drawn down to the axis floor, without a cap */
    var floor = c.log ? logFloor(c.series.map(function (r) { return (r.ci_low > 0 ? r.ci_low : r.median) * f; })) : null;
    mount(el, {
      legend: { top: 0, data: wls },
      grid: { left: ax.left, right: 16, top: legendTop(el, wls, 30), bottom: ax.bottom },
      tooltip: { trigger: "item", confine: true, formatter: function (p) {
        var r = p.data.row;
        return "<b>" + esc(r.env) + "</b>" + (EMULATED[r.env] ? " (emulated)" : "") + " · " +
          esc(r.workload) + "<br>" + esc(r.metric) + ": " +
          esc(fmt(r.median * f)) + " " + esc(sc.unit) + " [" + esc(fmt(r.ci_low * f)) + ", " +
          esc(fmt(r.ci_high * f)) + "]; n = " + esc(r.n);
      } },
      xAxis: { type: "category", data: envs, axisLabel: ax.axisLabel },
      yAxis: { type: c.log ? "log" : "value", name: sc.unit, scale: true, min: floor,
        axisLabel: { formatter: function (v) { return fmt(v); } } },
      series: wls.map(function (w, j) {
        return { type: "custom", name: w, itemStyle: { color: color(j) },
          renderItem: errorBar((j - (wls.length - 1) / 2) * step, color(j)), encode: { x: 0, y: [1, 2, 3] },
          data: c.series.filter(function (r) { return r.workload === w; }).map(function (r) {
            var clip = c.log && !(r.ci_low > 0);
            return { value: [envs.indexOf(r.env), clip ? floor : r.ci_low * f, r.median * f, r.ci_high * f, clip ? 1 : 0], row: r };
          }) };
      })
    });
  }

  /* density: per environment a line of medians against N held (a log2 axis of N) and its
     95% CI as a band: one polygon drawn by the item at index 0 from all of the series'
     points, so the axes' extents hold every CI end */
  function band(pts, col) {
    return function (params, api) {
      if (params.dataIndex !== 0) return null;
      var ok = pts.filter(function (p) { return p[1] != null && p[2] != null && isFinite(p[1]) && isFinite(p[2]); });
      if (ok.length < 2) return null;
      var upper = ok.map(function (p) { return api.coord([p[0], p[2]]); });
      var lower = ok.slice().reverse().map(function (p) { return api.coord([p[0], p[1]]); });
      return { type: "polygon", shape: { points: upper.concat(lower) }, style: { fill: col, opacity: 0.18 } };
    };
  }
  function scaled(x, f) { return x == null ? null : x * f; }
  function densityChart(el, c) {
    var meds = [], ns = [];
    c.series.forEach(function (s) {
      s.points.forEach(function (p) { meds.push(p.median); if (ns.indexOf(p.n) < 0) ns.push(p.n); });
    });
    var sc = timeScale(meds, c.unit), f = sc.f;
    var nmin = Math.min.apply(null, ns), nmax = Math.max.apply(null, ns);
    if (nmin === nmax) { nmin = Math.max(1, nmin / 2); nmax = nmax * 2; }
    var series = [], names = [];
    c.series.forEach(function (s, i) {
      var name = s.env + (s.emulated ? " (emulated)" : ""), col = color(i);
      names.push(name);
      var pts = s.points.map(function (p) {
        return [p.n, scaled(p.ci_low, f), scaled(p.ci_high, f)];
      });
      series.push({ type: "custom", name: name, silent: true, z: 1, itemStyle: { color: col },
        renderItem: band(pts, col), encode: { x: 0, y: [1, 2] }, data: pts });
      series.push({ type: "line", name: name, z: 3, symbol: "circle", symbolSize: 7,
        itemStyle: { color: col }, lineStyle: { color: col, width: 2 },
        data: s.points.map(function (p) { return { value: [p.n, p.median * f], point: p, env: s.env }; }) });
    });
    mount(el, {
      legend: { top: 0, data: names },
      grid: { left: 64, right: 24, top: legendTop(el, names, 52), bottom: 40 },
      tooltip: { trigger: "item", confine: true, formatter: function (p) {
        var q = p.data && p.data.point;
        if (!q) return "";
        return "<b>" + esc(p.data.env) + "</b>" + (EMULATED[p.data.env] ? " (emulated)" : "") + "<br>N = " +
          esc(q.n) + " held<br>" + esc(c.metric) + ": " + esc(fmt(q.median * f)) + " " + esc(sc.unit) +
          " [" + esc(fmt(scaled(q.ci_low, f))) + ", " + esc(fmt(scaled(q.ci_high, f))) + "]; rounds = " + esc(q.count);
      } },
      xAxis: { type: "log", logBase: 2, min: nmin, max: nmax, name: "N held", nameLocation: "middle", nameGap: 26,
        axisLabel: { formatter: function (v) { return String(Math.round(v)); } } },
      yAxis: { type: c.log ? "log" : "value", name: sc.unit, scale: c.unit !== "MiB", nameGap: 8,
        nameTextStyle: { align: "right" },
        axisLabel: { formatter: function (v) { return fmt(v); } } },
      series: series
    });
  }

  /* net: per environment the figures of one chart side by side, median and 95% CI */
  function netChart(el, c) {
    var envs = c.envs;
    var meds = [];
    c.series.forEach(function (s) { s.points.forEach(function (p) { meds.push(p.median); }); });
    var sc = timeScale(meds, c.unit), f = sc.f;
    var step = Math.min(22, 120 / Math.max(1, c.series.length));
    var ax = envAxis(el, envs, 64, 16);
    var floor = c.log ? logFloor(c.series.reduce(function (a, s) {
      return a.concat(s.points.map(function (p) { return (p.ci_low > 0 ? p.ci_low : p.median) * f; }));
    }, [])) : null;
    mount(el, {
      legend: { top: 0, data: c.series.map(function (s) { return s.name; }) },
      grid: { left: ax.left, right: 16, bottom: ax.bottom,
        top: legendTop(el, c.series.map(function (s) { return s.name; }), 30) },
      tooltip: { trigger: "item", confine: true, extraCssText: "max-width: 360px; white-space: normal;", formatter: function (p) {
        var r = p.data.row, s = c.series[p.seriesIndex];
        return "<b>" + esc(r.env) + "</b>" + (EMULATED[r.env] ? " (emulated)" : "") + " · " + esc(s.name) +
          "<br>median " + esc(fmt(r.median * f)) + " " + esc(sc.unit) + " [" + esc(fmt(scaled(r.ci_low, f))) + ", " +
          esc(fmt(scaled(r.ci_high, f))) + "]; n = " + esc(r.n) +
          (r.ratio != null ? "<br>ratio ×" + esc(fmt(r.ratio)) + " [" + esc(fmt(r.ratio_ci_low)) + ", " +
            esc(fmt(r.ratio_ci_high)) + "] " + (r.significant ? esc(r.words) : "n.s.") : "<br>" + esc(r.no_ratio)) +
          r.flags.map(function (x) { return "<br>⚠ " + esc(x); }).join("");
      } },
      xAxis: { type: "category", data: envs, axisLabel: ax.axisLabel },
      yAxis: { type: c.log ? "log" : "value", name: sc.unit, min: floor,
        axisLabel: { formatter: function (v) { return fmt(v); } } },
      series: c.series.map(function (s, j) {
        return { type: "custom", name: s.name, itemStyle: { color: color(j) },
          renderItem: errorBar((j - (c.series.length - 1) / 2) * step, color(j)), encode: { x: 0, y: [1, 2, 3] },
          data: s.points.map(function (r) {
            var clip = c.log && !(r.ci_low > 0);
            return { value: [envs.indexOf(r.env), clip ? floor : scaled(r.ci_low, f), r.median * f, scaled(r.ci_high, f), clip ? 1 : 0], row: r };
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
        axisLabel: { interval: 0, fontSize: 11 } },  /* whole, one line each: containLabel */
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

  /* the host canary through the run: getppid ns per call (top) and compute ops/s
     (bottom) against seconds since measuring started, one dot per burst, the running
     median as a line, a dashed line where each round (held set) began */
  function canaryChart(el) {
    var P = D.canary.plot, t = P.t;
    function pts(ys) { return ys ? t.map(function (x, i) { return [x, ys[i]]; }) : []; }
    var starts = (P.rounds || []).slice(1).map(function (r) {
      return { xAxis: r.t, name: "round " + r.round };
    });
    function marks(labelled) {
      return { silent: true, symbol: "none", lineStyle: { color: "#888", type: "dashed", width: 1 },
        label: labelled ? { show: true, position: "end", formatter: "{b}", fontSize: 11, color: "#5d6b78" } : { show: false },
        data: starts };
    }
    var tmax = t.length ? t[t.length - 1] : 1;
    var xs = [0, 1].map(function (i) {
      return { type: "value", gridIndex: i, min: 0, max: Math.ceil(tmax),
        name: i ? "s since measuring started" : "", nameLocation: "middle", nameGap: 26,
        axisLabel: { show: i === 1, formatter: function (v) { return String(+v.toFixed(3)); } } };
    });
    var ys = [["ns per getppid", 0], ["compute ops/s", 1]].map(function (a) {
      return { type: "value", gridIndex: a[1], scale: true, name: a[0], nameGap: 8,
        nameTextStyle: { align: "left" }, axisLabel: { formatter: function (v) { return fmt(v); } } };
    });
    function dots(name, ys, i, col) {
      return { type: "scatter", name: name, xAxisIndex: i, yAxisIndex: i, symbolSize: 3,
        itemStyle: { color: col, opacity: 0.45 }, data: pts(ys), markLine: marks(i === 0), large: false };
    }
    function median(name, ys, i, col) {
      return { type: "line", name: name, xAxisIndex: i, yAxisIndex: i, showSymbol: false, silent: true,
        lineStyle: { color: col, width: 2 }, itemStyle: { color: col }, data: pts(ys) };
    }
    var series = [dots("getppid burst", P.null_ns, 0, color(0)), dots("compute burst", P.compute_ops, 1, color(1))];
    if (P.null_median) series.push(median("getppid running median", P.null_median, 0, "#1f3b5a"));
    if (P.compute_median) series.push(median("compute running median", P.compute_median, 1, "#8a4a00"));
    function roundAt(x) {
      var r = null;
      (P.rounds || []).forEach(function (s) { if (s.t <= x) r = s.round; });
      return r;
    }
    mount(el, {
      legend: { top: 0, data: series.map(function (s) { return s.name; }) },
      grid: [{ left: 64, right: 24, top: 52, height: "34%" }, { left: 64, right: 24, bottom: 44, height: "34%" }],
      tooltip: { trigger: "item", confine: true, formatter: function (p) {
        var v = p.data || p.value;
        if (!v || v.length < 2) return "";
        var unit = p.seriesName.indexOf("getppid") === 0 ? " ns per getppid" : " ops/s";
        var r = roundAt(v[0]);
        return esc(p.seriesName) + "<br>" + esc(fmt(v[0])) + " s" + (r == null ? "" : " · round " + esc(r)) +
          "<br>" + esc(fmt(v[1])) + esc(unit);
      } },
      xAxis: xs, yAxis: ys, series: series
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
  ((D.density || {}).charts || []).forEach(function (c) { byId[c.id] = c; });
  ((D.net || {}).charts || []).forEach(function (c) { byId[c.id] = c; });
  Array.prototype.forEach.call(document.querySelectorAll("[data-chart]"), function (el) {
    var kind = el.getAttribute("data-chart");
    if (kind === "heatmap") heatmap(el);
    else if (kind === "startup") startup(el);
    else if (kind === "op") opChart(el, byId[el.getAttribute("data-id")]);
    else if (kind === "footprint") footprint(el, byId[el.getAttribute("data-id")]);
    else if (kind === "forest") forest(el);
    else if (kind === "density") densityChart(el, byId[el.getAttribute("data-id")]);
    else if (kind === "net") netChart(el, byId[el.getAttribute("data-id")]);
    else if (kind === "canary") canaryChart(el);
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
