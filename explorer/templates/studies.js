// The studies table: search, filters, sorting, the view in the address (#…), CSV / BibTeX export.
// Filters mean what `Catalog.query` means; the search also covers authors, base models and benchmarks.
(function () {
  'use strict';
  var D = window.SFTRL_STUDIES, G = window.SFTRL_GRAPH;
  var rows = D.studies;
  var $ = function (id) { return document.getElementById(id); };
  var FILTERS = ['q', 'domain', 'year', 'paradigm', 'method', 'source', 'family'];
  var DEFAULTS = { q: '', domain: '', year: '', paradigm: '', method: '', desc: false, source: '', family: '', sort: 'year', dir: 'desc' };
  var state = Object.assign({}, DEFAULTS);
  var paradigmLabel = {};
  D.paradigms.forEach(function (p) { paradigmLabel[p[0]] = p[1]; });
  var methodName = {};
  D.methods.forEach(function (m) { methodName[m[0]] = m[1]; });

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }
  function fill(id, options) {
    var sel = $(id);
    options.forEach(function (o) {
      var opt = document.createElement('option');
      opt.value = Array.isArray(o) ? o[0] : o; opt.textContent = Array.isArray(o) ? o[1] : o;
      sel.appendChild(opt);
    });
  }
  fill('f-domain', D.domains); fill('f-year', D.years.map(String)); fill('f-paradigm', D.paradigms);
  fill('f-method', D.methods.map(function (m) { return [m[0], m[1] + ' (' + m[0] + ')']; }));
  fill('f-source', D.sources); fill('f-family', D.families);

  function readHash() {
    var p = new URLSearchParams(location.hash.slice(1));
    state = Object.assign({}, DEFAULTS);
    FILTERS.concat(['sort', 'dir']).forEach(function (k) { if (p.has(k)) state[k] = p.get(k); });
    state.desc = p.get('desc') === '1';
    FILTERS.forEach(function (k) { $('f-' + k).value = state[k]; });
    $('f-desc').checked = state.desc;
  }
  function writeHash() {
    var p = new URLSearchParams();
    FILTERS.forEach(function (k) { if (state[k]) p.set(k, state[k]); });
    if (state.desc) p.set('desc', '1');
    if (state.sort !== DEFAULTS.sort || state.dir !== DEFAULTS.dir) { p.set('sort', state.sort); p.set('dir', state.dir); }
    var h = p.toString();
    history.replaceState(null, '', h ? '#' + h : location.pathname + location.search);
  }

  function methodSet() {
    if (!state.method) return null;
    var s = {}; s[state.method] = true;
    if (state.desc) SFTRL.reach(G.edges, state.method, false).forEach(function (m) { s[m] = true; });
    return s;
  }
  function matches(r, ms, q) {
    if (state.domain && r.domains.indexOf(state.domain) < 0) return false;
    if (state.year && r.year !== Number(state.year)) return false;
    if (state.paradigm && r.paradigm !== state.paradigm) return false;
    if (ms && !r.methods.some(function (m) { return ms[m]; })) return false;
    if (state.source && r.data_sources.indexOf(state.source) < 0) return false;
    if (state.family && r.families.indexOf(state.family) < 0) return false;
    if (q && r.hay.indexOf(q) < 0) return false;
    return true;
  }
  var KEY = {
    year: function (r) { return r.month + ' ' + r.id; }, title: function (r) { return r.title.toLowerCase(); },
    first_author: function (r) { return r.first_author.toLowerCase(); }, domain: function (r) { return r.domains.join(' '); },
    paradigm: function (r) { return r.paradigm; }, pipeline: function (r) { return r.pipeline; },
    base: function (r) { return r.base_models.join(' ').toLowerCase(); }
  };
  function shown() {
    var ms = methodSet(), q = state.q.trim().toLowerCase();
    var key = KEY[state.sort] || KEY.year, sign = state.dir === 'asc' ? 1 : -1;
    return rows.filter(function (r) { return matches(r, ms, q); }).sort(function (a, b) {
      var x = key(a), y = key(b);
      return x < y ? -sign : x > y ? sign : 0;
    });
  }
  function rowHtml(r) {
    var pipe = r.methods.map(function (m) {
      return '<a href="methods/' + esc(m) + '.html">' + esc(methodName[m] || m) + '</a>';
    }).join(' <span aria-label="then">→</span> ');
    return '<tr><td class="nowrap">' + esc(r.month) + '</td>' +
      '<td><a href="studies/' + esc(r.id) + '.html">' + esc(r.title) + '</a></td>' +
      '<td>' + esc(r.first_author) + '</td><td>' + esc(r.domains.join(', ')) + '</td>' +
      '<td><span class="badge p-' + esc(r.paradigm) + '">' + esc(paradigmLabel[r.paradigm] || r.paradigm) + '</span></td>' +
      '<td>' + pipe + '</td><td>' + esc(r.base_models.join(', ')) + '</td></tr>';
  }
  function render() {
    var list = shown();
    document.querySelector('#studies tbody').innerHTML = list.map(rowHtml).join('\n');
    var c = $('count');
    c.dataset.count = String(list.length);
    c.innerHTML = '<strong>' + list.length + '</strong> of ' + rows.length + ' studies';
    document.querySelectorAll('#studies th[data-key]').forEach(function (th) {
      var k = th.getAttribute('data-key');
      th.setAttribute('aria-sort', k === state.sort ? (state.dir === 'asc' ? 'ascending' : 'descending') : 'none');
    });
    writeHash();
    return list;
  }

  function download(name, type, text) {
    var a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([text], { type: type }));
    a.download = name;
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 1000);
  }
  var CSV_COLS = ['id', 'year', 'month', 'title', 'first_author', 'arxiv', 'venue', 'domains', 'paradigm', 'pipeline',
    'data_sources', 'base_models', 'benchmarks'];
  function csvCell(v) {
    var s = Array.isArray(v) ? v.join('; ') : String(v);
    return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  $('export-csv').addEventListener('click', function () {
    var lines = [CSV_COLS.join(',')].concat(shown().map(function (r) {
      return CSV_COLS.map(function (k) { return csvCell(r[k]); }).join(',');
    }));
    download('sftrl-studies.csv', 'text/csv', lines.join('\n') + '\n');
  });
  $('export-bib').addEventListener('click', function () {
    download('sftrl-studies.bib', 'application/x-bibtex', shown().map(function (r) { return r.bib; }).join('\n\n') + '\n');
  });

  var form = $('filters');
  form.addEventListener('input', function (ev) {
    var t = ev.target;
    if (t.id === 'f-desc') state.desc = t.checked;
    else if (t.name && FILTERS.indexOf(t.name) >= 0) state[t.name] = t.value;
    render();
  });
  form.addEventListener('submit', function (ev) { ev.preventDefault(); });
  form.addEventListener('reset', function () {
    setTimeout(function () { location.hash = ''; readHash(); render(); }, 0);
  });
  document.querySelectorAll('#studies th[data-key] button').forEach(function (b) {
    b.addEventListener('click', function () {
      var k = b.parentElement.getAttribute('data-key');
      if (state.sort === k) state.dir = state.dir === 'asc' ? 'desc' : 'asc';
      else { state.sort = k; state.dir = k === 'year' ? 'desc' : 'asc'; }
      render();
    });
  });
  window.addEventListener('hashchange', function () { readHash(); render(); });
  readHash();
  render();
})();
