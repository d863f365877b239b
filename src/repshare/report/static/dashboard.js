// Renders every Vega-Lite spec on the page: <script type="application/json" data-chart="ID"> holds the
// spec, the element with id ID receives the chart. No network: the data is inline in the spec, and the
// Vega libraries are inline on the page. ast: true evaluates expressions with Vega's interpreter, so
// the page's Content-Security-Policy needs no 'unsafe-eval'.
(function () {
  var specs = document.querySelectorAll('script[type="application/json"][data-chart]');
  specs.forEach(function (el) {
    var target = document.getElementById(el.getAttribute('data-chart'));
    if (!target) { console.error('chart target missing: ' + el.getAttribute('data-chart')); return; }
    var spec;
    try { spec = JSON.parse(el.textContent); } catch (e) { console.error('chart spec: ' + e); return; }
    vegaEmbed(target, spec, {mode: 'vega-lite', ast: true, actions: false, renderer: 'svg', tooltip: {theme: 'light'}})
      .then(function () { target.removeAttribute('data-pending'); })
      .catch(function (e) {
        target.removeAttribute('data-pending');
        target.textContent = 'This chart could not be drawn: ' + e;
        console.error('chart ' + target.id + ': ' + e);
      });
  });
})();
