// sluice console: live per-step counts without a full reload. Plain
// JavaScript, vendored in the binary; no toolchain, no external requests.
// A page that shows counts carries data-counts-url on an element; every
// element with data-step and data-field holds one number, updated in place
// every 2 seconds from that JSON endpoint (`steps`), and every element with
// data-total from its `total`.
(function () {
  'use strict';
  var INTERVAL_MS = 2000;

  function start() {
    var holder = document.querySelector('[data-counts-url]');
    if (!holder) { return; }
    var url = holder.getAttribute('data-counts-url');
    var stamp = document.getElementById('updated');

    function apply(data) {
      var steps = (data && data.steps) || {};
      var cells = document.querySelectorAll('[data-step][data-field]');
      for (var i = 0; i < cells.length; i++) {
        var cell = cells[i];
        var counts = steps[cell.getAttribute('data-step')];
        var value = counts ? counts[cell.getAttribute('data-field')] : 0;
        var text = String(typeof value === 'number' ? value : 0);
        if (cell.textContent !== text) { cell.textContent = text; }
      }
      var totals = (data && data.total) || {};
      var sums = document.querySelectorAll('[data-total]');
      for (var j = 0; j < sums.length; j++) {
        var t = totals[sums[j].getAttribute('data-total')];
        var s = String(typeof t === 'number' ? t : 0);
        if (sums[j].textContent !== s) { sums[j].textContent = s; }
      }
      if (stamp) { stamp.textContent = 'live, updated ' + new Date().toLocaleTimeString(); }
    }

    function poll() {
      fetch(url, { credentials: 'same-origin', headers: { 'Accept': 'application/json' } })
        .then(function (r) {
          if (r.status === 401) { window.location.reload(); throw new Error('session ended'); }
          if (!r.ok) { throw new Error('HTTP ' + r.status); }
          return r.json();
        })
        .then(apply)
        .catch(function (e) { if (stamp) { stamp.textContent = 'not updated: ' + e.message; } })
        .then(function () { window.setTimeout(poll, INTERVAL_MS); });
    }
    window.setTimeout(poll, INTERVAL_MS);
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
