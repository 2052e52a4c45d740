// Shared by every page: KaTeX rendering, copy buttons, and graph reachability (lineage/descendants).
(function () {
  'use strict';

  // Methods reachable from `start` along derivation edges: forward = what it derives from (lineage),
  // backward = what derives from it (descendants). Edges: {source, target, derivation}.
  function reach(edges, start, forward) {
    var next = {};
    edges.forEach(function (e) {
      if (!e.derivation) return;
      var a = forward ? e.source : e.target, b = forward ? e.target : e.source;
      (next[a] = next[a] || []).push(b);
    });
    var seen = {}, stack = [start], out = [];
    while (stack.length) {
      var n = stack.pop();
      (next[n] || []).forEach(function (m) {
        if (!seen[m] && m !== start) { seen[m] = true; out.push(m); stack.push(m); }
      });
    }
    return out;
  }

  function renderMath() {
    if (!window.katex) return;
    document.querySelectorAll('.math[data-tex]').forEach(function (el) {
      // inline mode with \displaystyle: display-sized maths that may wrap after a relation or an
      // operator, so a long objective fits the page instead of running off to the right
      window.katex.render('\\displaystyle ' + el.getAttribute('data-tex'), el, { displayMode: false, throwOnError: false, strict: 'ignore' });
    });
  }

  function fallbackCopy(text) {
    var ta = document.createElement('textarea');
    ta.value = text; ta.setAttribute('readonly', ''); ta.style.position = 'fixed'; ta.style.opacity = '0';
    document.body.appendChild(ta); ta.select();
    var ok = false;
    try { ok = document.execCommand('copy'); } catch (err) { ok = false; }
    ta.remove();
    return ok;
  }

  document.addEventListener('click', function (ev) {
    var b = ev.target.closest('[data-copy]');
    if (!b) return;
    var src = document.querySelector(b.getAttribute('data-copy'));
    var status = b.parentElement.querySelector('.copy-status');
    var text = src ? src.textContent : '';
    function done(ok) {
      if (status) status.textContent = ok ? 'Copied to the clipboard.' : 'The browser refused: select the text and copy it.';
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(fallbackCopy(text)); });
    } else {
      done(fallbackCopy(text));
    }
  });

  window.SFTRL = { reach: reach };
  document.addEventListener('DOMContentLoaded', renderMath);
})();
