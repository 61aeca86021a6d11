// The report pages' two behaviours.
//
// The chart: the page carries its data in <script type="application/json" id="usage-data">,
// which the browser never runs, and this draws it with uPlot as stacked bars, one series per
// group, the biggest at the bottom. The labels come from the server, already in the report's
// time zone, so nothing here converts a time. Without this script the table has every figure.
//
// The query form: fields left empty are not sent, so the URL holds only what was chosen.
"use strict";
(() => {
  const PALETTE = ["#1f5fbf", "#e07b28", "#2a9d5c", "#c2415d", "#7b52c7", "#1a9bb0", "#b08a1e", "#8c5a3c"];
  const OTHER = "#a3abb9";
  const HEIGHT = 320;
  const NANOS = 1e9;
  const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
  const whole = new Intl.NumberFormat("en-US");

  // Chart figures only: the exact amounts are in the table, from the server.
  function dollars(nanos, digits) {
    const usd = nanos / NANOS;
    return "$" + usd.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }

  function formatter(metric) {
    if (metric === "cost") {
      return (v) => dollars(v, v !== 0 && Math.abs(v) < 0.01 * NANOS ? 6 : 2);
    }
    return (v) => whole.format(v);
  }

  // Tick labels with as many decimals as the step between ticks needs, so no two read alike.
  function axisValues(metric) {
    return (u, splits) => {
      if (metric !== "cost") {
        return splits.map((v) => compact.format(v));
      }
      const step = splits.length > 1 ? Math.abs(splits[1] - splits[0]) / NANOS : 1;
      const digits = step >= 1 ? 0 : Math.min(9, Math.max(2, Math.ceil(-Math.log10(step) - 1e-9)));
      return splits.map((v) => (v / NANOS >= 1000 ? "$" + compact.format(v / NANOS) : dollars(v, v === 0 ? 0 : digits)));
    };
  }

  // Each series drawn as its running sum over the ones below it, with a band down to the
  // previous one, so every bar shows its own group's share of the stack.
  function stacked(series, count) {
    const sums = new Array(count).fill(0);
    return series.map((s) => s.values.map((v, i) => (sums[i] += v)));
  }

  function draw(box, data) {
    const count = data.labels.length;
    const format = formatter(data.metric);
    // A cost that leaves out unpriced requests is a lower bound, and one of nothing priced unknown.
    const shown = (value, unpriced) => {
      if (data.metric !== "cost" || !unpriced) {
        return format(value);
      }
      return value ? "≥ " + format(value) : "—";
    };
    const totals = data.series.map((s) => s.values.reduce((a, b) => a + b, 0));
    const xs = Array.from({ length: count }, (_, i) => i);
    const series = [
      {
        label: data.bucket,
        value: (u, v, si, i) => (i == null ? "whole range" : data.labels[i]),
      },
      ...data.series.map((s, n) => {
        const colour = s.other ? OTHER : PALETTE[n % PALETTE.length];
        const unpriced = s.unpriced.reduce((a, b) => a + b, 0);
        return {
          label: s.label,
          stroke: colour,
          fill: colour,
          width: 0,
          points: { show: false },
          paths: uPlot.paths.bars({ size: [0.82, 64], gap: 1 }),
          value: (u, v, si, i) =>
            i == null ? shown(totals[n], unpriced) : shown(s.values[i], s.unpriced[i]),
        };
      }),
    ];
    const bands = data.series.slice(1).map((_, n) => ({ series: [n + 2, n + 1] }));
    const options = {
      width: box.clientWidth,
      height: HEIGHT,
      series,
      bands,
      scales: {
        x: { time: false, range: () => [-0.5, count - 0.5] },
        y: { range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1] },
      },
      axes: [
        {
          label: data.axis,
          labelSize: 24,
          labelFont: "12px system-ui, sans-serif",
          font: "12px system-ui, sans-serif",
          incrs: [1, 2, 3, 4, 6, 7, 12, 14, 24, 28, 48, 72, 96, 168, 336, 720],
          space: 52,
          values: (u, splits) => splits.map((i) => (Number.isInteger(i) && i >= 0 && i < count ? data.ticks[i] : "")),
          grid: { show: false },
          stroke: "#5d6677",
          ticks: { stroke: "#d8dde6" },
        },
        {
          values: axisValues(data.metric),
          size: 72,
          font: "12px system-ui, sans-serif",
          stroke: "#5d6677",
          grid: { stroke: "#e6e9ef" },
          ticks: { show: false },
        },
      ],
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      legend: { live: true },
    };
    const data2 = [xs, ...stacked(data.series, count)];
    const chart = new uPlot(options, data2, box);
    box.dataset.drawn = String(data.series.length);
    new ResizeObserver(() => {
      if (box.clientWidth && box.clientWidth !== chart.width) {
        chart.setSize({ width: box.clientWidth, height: HEIGHT });
      }
    }).observe(box);
  }

  function cleanQuery(form) {
    form.addEventListener("submit", () => {
      for (const field of form.querySelectorAll("input[name], select[name]")) {
        if (field.value === "") {
          field.disabled = true; // left out of the URL
        }
      }
      // Back from the next page, the fields must be usable again.
      window.addEventListener("pageshow", () => {
        for (const field of form.querySelectorAll("[disabled]")) {
          field.disabled = false;
        }
      }, { once: true });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const form of document.querySelectorAll("form[data-clean-query]")) {
      cleanQuery(form);
    }
    const block = document.getElementById("usage-data");
    const box = document.getElementById("usage-chart");
    if (!block || !box || typeof uPlot === "undefined") {
      return;
    }
    const data = JSON.parse(block.textContent);
    if (!data.series.length) {
      box.textContent = "No requests in this range.";
      box.classList.add("chart-empty");
      return;
    }
    draw(box, data);
  });
})();
