// The method graph (cytoscape.js): fixed layout from the build, click = lineage + descendants.
(function () {
  'use strict';
  var G = window.SFTRL_GRAPH;
  var $ = function (id) { return document.getElementById(id); };
  var byId = {};
  G.nodes.forEach(function (n) { byId[n.id] = n; });
  var PARADIGM = { sft: '#56B4E9', rl: '#E69F00', hybrid: '#009E73' };
  var PLABEL = { sft: 'SFT', rl: 'RL / preference', hybrid: 'Hybrid (SFT + RL)' };

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }

  var elements = [];
  G.axes.forEach(function (a) {
    elements.push({ group: 'nodes', data: { id: a.id, label: a.label }, position: { x: a.x, y: a.y },
      classes: 'axis', selectable: false, grabbable: false });
  });
  G.nodes.forEach(function (n) {
    elements.push({ group: 'nodes', data: { id: n.id, label: n.name, paradigm: n.paradigm, w: n.w, h: n.h }, position: { x: n.x, y: n.y },
      classes: 'm', grabbable: false });
  });
  G.edges.forEach(function (e) {
    elements.push({ group: 'edges', data: { id: e.id, source: e.source, target: e.target, kind: e.kind } });
  });

  var style = [
    { selector: 'node.m', style: {
      shape: 'round-rectangle', width: 'data(w)', height: 'data(h)', label: 'data(label)',
      'text-wrap': 'wrap', 'text-max-width': 104,
      'text-valign': 'center', 'text-halign': 'center', 'font-size': 12, 'font-family': 'system-ui, sans-serif',
      color: '#111', 'border-width': 1, 'border-color': '#333', 'background-color': '#ccc' } },
    { selector: 'node.axis', style: {
      'background-opacity': 0, 'border-width': 0, label: 'data(label)', color: '#555', 'font-size': 15,
      'font-weight': 'bold', 'text-valign': 'center', events: 'no', width: 1, height: 1 } },
    { selector: 'edge', style: {
      'curve-style': 'bezier', 'target-arrow-shape': 'triangle', width: 2, 'arrow-scale': 1, opacity: 0.8 } },
    { selector: 'edge[kind = "equivalent_under"]', style: { 'line-style': 'dashed' } },
    { selector: 'edge[kind = "special_case_of"]', style: { 'line-style': 'dotted' } },
    { selector: '.faded', style: { opacity: 0.12 } },
    { selector: 'node.lit', style: { 'border-width': 3, 'border-color': '#111' } },
    { selector: 'node.lineage', style: { 'border-color': '#0b3d91', 'border-width': 4 } },
    { selector: 'node.descendant', style: { 'border-color': '#8b1a1a', 'border-width': 4, 'border-style': 'double' } },
    { selector: 'node.focus', style: { 'border-width': 5, 'border-color': '#000', 'underlay-color': '#ffd400',
      'underlay-opacity': 0.8, 'underlay-padding': 6 } },
    { selector: 'edge.lit', style: { width: 3.2, opacity: 1 } }
  ];
  Object.keys(PARADIGM).forEach(function (p) {
    style.push({ selector: 'node.m[paradigm = "' + p + '"]', style: { 'background-color': PARADIGM[p] } });
  });
  style.push({ selector: 'node.m[paradigm = "hybrid"]', style: { color: '#fff' } });
  Object.keys(G.colours).forEach(function (k) {
    style.push({ selector: 'edge[kind = "' + k + '"]', style: { 'line-color': G.colours[k], 'target-arrow-color': G.colours[k] } });
  });

  var cy = window.cytoscape({ container: $('cy'), elements: elements, layout: { name: 'preset' }, style: style,
    minZoom: 0.15, maxZoom: 3, autoungrabify: true, boxSelectionEnabled: false });
  window.cy = cy;
  cy.fit(undefined, 12);

  function links(ids) {
    if (!ids.length) return '<span class="muted">none</span>';
    return ids.map(function (i) { return '<a href="methods/' + esc(i) + '.html">' + esc(byId[i].name) + '</a>'; }).join(', ');
  }
  function edgeLine(e) {
    return '<li><strong>' + esc(byId[e.source].name) + '</strong> <span class="kind" style="--k:' + G.colours[e.kind] + '">' +
      esc(e.kind.replace(/_/g, ' ')) + '</span> <strong>' + esc(byId[e.target].name) + '</strong>: ' + esc(e.note) + '</li>';
  }
  function clear() {
    cy.elements().removeClass('lit focus faded lineage descendant');
    $('panel').innerHTML = '<p class="muted">Click a method to see its lineage and descendants.</p>';
    history.replaceState(null, '', location.pathname + location.search);
  }
  function focus(id) {
    if (!byId[id]) return;
    var anc = SFTRL.reach(G.edges, id, true), desc = SFTRL.reach(G.edges, id, false);
    var on = {}; on[id] = true;
    anc.concat(desc).forEach(function (m) { on[m] = true; });
    cy.batch(function () {
      cy.elements().removeClass('lit focus faded lineage descendant');
      cy.nodes('.m').forEach(function (n) { n.addClass(on[n.id()] ? 'lit' : 'faded'); });
      anc.forEach(function (m) { cy.getElementById(m).addClass('lineage'); });
      desc.forEach(function (m) { cy.getElementById(m).addClass('descendant'); });
      cy.getElementById(id).addClass('focus');
      cy.edges().forEach(function (e) {
        var s = e.source().id(), t = e.target().id();
        var chain = e.data('kind') !== 'equivalent_under' && on[s] && on[t] &&
          (s === id || t === id || (anc.indexOf(s) >= 0 && anc.indexOf(t) >= 0) || (desc.indexOf(s) >= 0 && desc.indexOf(t) >= 0));
        e.addClass(chain ? 'lit' : 'faded');
      });
    });
    var n = byId[id];
    var touching = G.edges.filter(function (e) { return e.source === id || e.target === id; });
    $('panel').innerHTML = '<h2>' + esc(n.name) + '</h2>' +
      '<p><span class="badge p-' + esc(n.paradigm) + '">' + esc(PLABEL[n.paradigm]) + '</span> ' +
      esc(n.family.replace(/_/g, ' ')) + ', ' + n.year + '</p><p>' + esc(n.idea) + '</p>' +
      '<p><a class="btn" href="methods/' + esc(id) + '.html">Open the ' + esc(n.name) + ' page</a></p>' +
      '<h3>Lineage (' + anc.length + ')</h3><p class="lineage-list">' + links(anc) + '</p>' +
      '<h3>Descendants (' + desc.length + ')</h3><p class="descendant-list">' + links(desc) + '</p>' +
      '<h3>Relations</h3><ul class="rels">' + touching.map(edgeLine).join('') + '</ul>';
    history.replaceState(null, '', '#' + id);
  }
  var last = { id: null, t: 0 };  // a second tap on the same method within 400 ms opens its page
  cy.on('tap', 'node.m', function (ev) {
    var id = ev.target.id(), now = Date.now();
    if (last.id === id && now - last.t < 400) { location.href = 'methods/' + id + '.html'; return; }
    last = { id: id, t: now };
    focus(id);
  });
  cy.on('tap', function (ev) { if (ev.target === cy) clear(); });

  var names = $('graph-names');
  G.nodes.slice().sort(function (a, b) { return a.name.localeCompare(b.name); }).forEach(function (n) {
    var o = document.createElement('option'); o.value = n.name; names.appendChild(o);
  });
  function find(q) {
    q = q.trim().toLowerCase();
    if (!q) return null;
    var exact = G.nodes.filter(function (n) { return n.name.toLowerCase() === q || n.id === q; });
    var part = G.nodes.filter(function (n) { return n.name.toLowerCase().indexOf(q) >= 0 || n.id.indexOf(q) >= 0; });
    return (exact[0] || part[0] || null);
  }
  $('graph-search').addEventListener('change', function (ev) {
    var n = find(ev.target.value);
    if (!n) return;
    focus(n.id);
    cy.animate({ center: { eles: cy.getElementById(n.id) }, zoom: Math.max(cy.zoom(), 1) }, { duration: 300 });
  });
  $('graph-fit').addEventListener('click', function () { cy.fit(undefined, 20); });
  $('graph-zoom-in').addEventListener('click', function () { cy.zoom({ level: cy.zoom() * 1.25, renderedPosition: { x: cy.width() / 2, y: cy.height() / 2 } }); });
  $('graph-zoom-out').addEventListener('click', function () { cy.zoom({ level: cy.zoom() / 1.25, renderedPosition: { x: cy.width() / 2, y: cy.height() / 2 } }); });
  $('graph-clear').addEventListener('click', clear);
  var start = decodeURIComponent(location.hash.slice(1));
  if (byId[start]) focus(start);
})();
