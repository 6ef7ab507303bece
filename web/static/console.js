// LoveKey console: the resident page's water-use chart, drawn on a <canvas> from the JSON
// the server computes (/api/residents/{id}/usage). Bars are snapped to whole pixels so the
// browser tests can measure them against the served numbers; the drawn geometry is left on
// the canvas as data-* attributes.
(function () {
  'use strict';

  var COLOURS = {
    bar: '#2563eb', below: '#fef3c7', rule: '#dc2626', grid: '#e5e7eb', axis: '#6b7280', text: '#374151'
  };

  function niceCeiling(value) {
    if (!(value > 0)) { return 1; }
    var magnitude = Math.pow(10, Math.floor(Math.log10(value)));
    var factors = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < factors.length; i++) {
      if (factors[i] * magnitude >= value) { return factors[i] * magnitude; }
    }
    return 10 * magnitude;
  }

  function draw(canvas, data) {
    var ratio = window.devicePixelRatio || 1;
    var width = Math.max(320, Math.floor(canvas.clientWidth || canvas.width));
    var height = 260;
    canvas.width = Math.floor(width * ratio);
    canvas.height = Math.floor(height * ratio);
    var ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, width, height);

    var usage = data.usage_l, n = usage.length;
    var ruleRate = data.rule.min_l / data.rule.window_h;      // litres per hour at the rule's edge
    var left = 40, right = width - 8, top = 10, bottom = height - 28;
    var plotHeight = bottom - top;
    var pitch = (right - left) / n;
    var barWidth = Math.max(1, Math.round(pitch) - 1);
    var yMax = niceCeiling(Math.max(Math.max.apply(null, usage.concat([0])), ruleRate * 1.5));

    // windows below the rule: shaded columns behind everything
    ctx.fillStyle = COLOURS.below;
    for (var i = 0; i < n; i++) {
      if (data.below_rule[i]) {
        ctx.fillRect(left + Math.round(i * pitch), top, Math.round(pitch) || 1, plotHeight);
      }
    }
    // grid, ticks and day marks
    ctx.font = '11px sans-serif';
    ctx.fillStyle = COLOURS.text;
    ctx.textAlign = 'right';
    [0, 0.5, 1].forEach(function (f) {
      var y = Math.round(bottom - f * plotHeight) + 0.5;
      ctx.strokeStyle = COLOURS.grid;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(right, y); ctx.stroke();
      ctx.fillText(String(Math.round(yMax * f * 10) / 10), left - 4, y + 4);
    });
    ctx.textAlign = 'center';
    data.day_marks.forEach(function (mark) {
      var x = left + Math.round(mark.index * pitch) - 0.5;
      ctx.strokeStyle = COLOURS.grid;
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, bottom); ctx.stroke();
      // the date under the middle of its day, when the whole label fits
      var centre = x + 12 * pitch, half = ctx.measureText(mark.label).width / 2;
      if (centre + half <= width) {
        ctx.fillStyle = COLOURS.text;
        ctx.fillText(mark.label, centre, height - 10);
      }
    });
    // the rule as a rate: min_l spread evenly over window_h hours
    var ruleY = Math.round(bottom - ruleRate / yMax * plotHeight) + 0.5;
    ctx.strokeStyle = COLOURS.rule;
    ctx.setLineDash([4, 3]);
    ctx.beginPath(); ctx.moveTo(left, ruleY); ctx.lineTo(right, ruleY); ctx.stroke();
    ctx.setLineDash([]);
    // bars last, in front of the rule line
    ctx.fillStyle = COLOURS.bar;
    for (var j = 0; j < n; j++) {
      var h = Math.round(usage[j] / yMax * plotHeight);
      if (h > 0) {
        ctx.fillRect(left + Math.round(j * pitch), bottom - h, barWidth, h);
      }
    }
    ctx.strokeStyle = COLOURS.axis;
    ctx.beginPath(); ctx.moveTo(left, bottom + 0.5); ctx.lineTo(right, bottom + 0.5); ctx.stroke();

    canvas.dataset.plotLeft = String(left);
    canvas.dataset.plotBottom = String(bottom);
    canvas.dataset.plotHeight = String(plotHeight);
    canvas.dataset.pitch = String(pitch);
    canvas.dataset.barWidth = String(barWidth);
    canvas.dataset.yMax = String(yMax);
    canvas.dataset.cssWidth = String(width);
    canvas.dataset.rendered = '1';
  }

  function summary(canvas, data) {
    var out = document.getElementById('usage-summary');
    if (!out) { return; }
    var below = data.below_rule.filter(Boolean).length;
    var text = (canvas.dataset.labelTotal || '{total} L').replace('{total}', data.total_l.toFixed(1))
      .replace('{below}', String(below));
    out.textContent = data.usage_l.some(function (v) { return v > 0; }) ? text : canvas.dataset.labelEmpty;
  }

  function load(canvas) {
    fetch(canvas.dataset.src, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (response) {
        if (!response.ok) { throw new Error('usage ' + response.status); }
        return response.json();
      })
      .then(function (data) {
        draw(canvas, data);
        summary(canvas, data);
        var timer = null;
        window.addEventListener('resize', function () {
          clearTimeout(timer);
          timer = setTimeout(function () { draw(canvas, data); }, 150);
        });
      })
      .catch(function (error) {
        canvas.dataset.rendered = 'error';
        var out = document.getElementById('usage-summary');
        if (out) { out.textContent = String(error); }
      });
  }

  document.addEventListener('DOMContentLoaded', function () {
    var canvas = document.getElementById('usage-chart');
    if (canvas) { load(canvas); }
  });
}());
