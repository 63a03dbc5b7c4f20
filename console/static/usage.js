// Usage charts: data from the page's JSON block (#chart-data), drawn with the vendored
// Chart.js (static/chart.umd.min.js). The same figures are in the page's tables.
(function () {
  "use strict";
  var source = document.getElementById("chart-data");
  if (!source || typeof Chart === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  var palette = ["#0b5cad", "#e8710a", "#1a7f37", "#c62828", "#6f42c1", "#00838f", "#9a6700", "#5b6470"];
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  function stacked(id, key) {
    var el = document.getElementById(id);
    if (!el) { return; }
    new Chart(el, {
      type: "bar",
      data: {
        labels: data.over_time.labels,
        datasets: data.over_time.series.map(function (p, i) {
          return { label: p.name, data: p[key], backgroundColor: palette[i % palette.length] };
        })
      },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } }
    });
  }
  function bars(id, rows, key) {
    var el = document.getElementById(id);
    if (!el) { return; }
    new Chart(el, {
      type: "bar",
      data: {
        labels: rows.map(function (r) { return r.label; }),
        datasets: [{ label: key, data: rows.map(function (r) { return r[key]; }), backgroundColor: palette[0] }]
      },
      options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true } } }
    });
  }
  stacked("chart-requests", "requests");
  stacked("chart-tokens", "tokens");
  bars("chart-model", data.by_model, "requests");
  bars("chart-user", data.by_user, "requests");
  bars("chart-client", data.by_client, "requests");
  bars("chart-failures", data.failures, "requests");
})();
