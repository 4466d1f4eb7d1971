// gradcam serve's page: no framework, no build step. Talks to the /v1 API of the server that serves it.
'use strict';

const METHODS = ['gradcam', 'hirescam', 'gradcam-elementwise', 'gradcam++', 'xgradcam', 'layercam', 'eigencam',
  'eigengradcam', 'scorecam', 'ablationcam', 'guided-backprop', 'guided-gradcam'];
const GUIDED = new Set(['guided-backprop', 'guided-gradcam']);

const $ = (id) => document.getElementById(id);
const state = {
  file: null,        // the photo as uploaded (a Blob)
  name: 'upload',    // its file name
  photo: null,       // the photo decoded at the size the server decoded it (for blending)
  cls: null,         // the class being explained
  report: null,      // the last explain answer
  cards: [],         // {canvas, heat, box} per overlay shown
  busy: 0,
  seq: 0,            // explain requests made: a late answer to an older one is dropped
};

function setBusy(delta) {
  state.busy += delta;
  $('spinner').hidden = state.busy === 0;
}

function setStatus(text) { $('status').textContent = text; }

function showError(msg) {
  $('error').textContent = msg || '';
  $('error').hidden = !msg;
}

async function api(path, init) {
  setBusy(1);
  try {
    const r = await fetch(path, init);
    if (!r.ok) {
      let msg = r.status + ' ' + r.statusText;
      try { const j = await r.json(); if (j && j.error) msg = r.status + ': ' + j.error; } catch (_) { /* not JSON */ }
      if (r.headers.get('Retry-After')) msg += ' (retry in ' + r.headers.get('Retry-After') + ' s)';
      throw new Error(msg);
    }
    return r;
  } finally {
    setBusy(-1);
  }
}

// the photo as a multipart form, so that the report names it
function upload() {
  const f = new FormData();
  f.append('image', state.file, state.name);
  return f;
}

function stem(name) {
  const base = name.replace(/^.*[\\/]/, '').replace(/\.[^.]*$/, '');
  return base.replace(/[^A-Za-z0-9._-]/g, '_') || 'upload';
}

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) e.append(c);
  return e;
}

// ---- setup -------------------------------------------------------------------------------------------------

async function init() {
  const box = $('methods');
  for (const m of METHODS) {
    const cb = el('input', { type: 'checkbox', value: m, checked: m === 'gradcam' });
    cb.dataset.method = m;
    cb.addEventListener('change', reexplain);
    box.append(el('label', {}, cb, m));
  }
  $('layer').addEventListener('change', reexplain);
  $('colormap').addEventListener('change', reexplain);
  $('alpha').addEventListener('input', () => {
    $('alpha-out').textContent = Number($('alpha').value).toFixed(2);
    redrawAll();
  });
  $('threshold').addEventListener('input', () => { $('threshold-out').textContent = Number($('threshold').value).toFixed(2); });
  $('threshold').addEventListener('change', () => { $('show-mask').checked = true; reexplain(); });
  $('show-box').addEventListener('change', redrawAll);
  $('show-mask').addEventListener('change', () => {
    for (const m of document.querySelectorAll('.card .mask')) m.hidden = !$('show-mask').checked;
  });
  $('file').addEventListener('change', () => {
    const f = $('file').files[0];
    if (f) guard(setPhoto(f, f.name));
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const f = e.dataTransfer.files[0];
    if (f) guard(setPhoto(f, f.name));
  });

  const [health, layers, examples] = await Promise.all([
    api('/healthz').then((r) => r.json()),
    api('/v1/layers').then((r) => r.json()),
    api('/v1/examples').then((r) => r.json()),
  ]);
  $('model').textContent = health.model + ' · ' + health.workers + ' workers';
  const sel = $('layer');
  for (const l of layers.layers) {
    const o = el('option', { value: l.name, textContent: l.name + '  ' + l.shape.join('×') + (l.alias_of ? ' (= ' + l.alias_of + ')' : '') });
    if (l.name === layers.default) o.selected = true;
    sel.append(o);
  }
  const ex = $('examples');
  if (examples.examples.length === 0) ex.textContent = 'none on this server (scripts/fetch-assets.sh fetches them)';
  for (const e of examples.examples) {
    const b = el('button', { type: 'button', textContent: e.name });
    b.dataset.example = e.name;
    b.addEventListener('click', () => guard((async () => {
      const r = await api(e.url);
      await setPhoto(await r.blob(), e.name);
    })()));
    ex.append(b);
  }
  setStatus('Ready: drop a photo, choose one, or take an example');
}

function guard(p) {
  return p.catch((e) => { showError(e.message || String(e)); setStatus('Failed'); });
}

// ---- photo and classes ---------------------------------------------------------------------------------------

async function setPhoto(blob, name) {
  showError('');
  state.file = blob;
  state.name = name;
  state.photo = null;
  state.cls = null;
  state.report = null;
  clearResults();
  $('classes').replaceChildren(el('li', { className: 'muted', textContent: 'Classifying…' }));
  const prev = $('preview');
  if (prev.src) URL.revokeObjectURL(prev.src);
  prev.hidden = false;
  prev.onerror = () => { prev.hidden = true; }; // a format the browser cannot show (TIFF): the server still can
  prev.src = URL.createObjectURL(blob);
  setStatus('Classifying ' + name + '…');
  let j;
  try {
    j = await (await api('/v1/classify?k=5', { method: 'POST', body: upload() })).json();
  } catch (e) {
    $('classes').replaceChildren(el('li', { className: 'muted', textContent: 'None: the photo was refused' }));
    throw e;
  }
  const res = j.results[0];
  const list = $('classes');
  list.replaceChildren();
  for (const p of res.predictions) {
    const bar = el('span', { className: 'bar' });
    bar.style.width = (100 * p.probability).toFixed(1) + '%';
    const b = el('button', { type: 'button' }, bar,
      el('span', { className: 'text' }, el('span', { textContent: p.label + ' (' + p.class + ')' }),
        el('span', { textContent: (100 * p.probability).toFixed(1) + '%' })));
    b.dataset.class = p.class;
    b.addEventListener('click', () => {
      for (const x of list.querySelectorAll('button')) x.classList.toggle('selected', x === b);
      state.cls = p.class;
      guard(explain());
    });
    list.append(el('li', {}, b));
  }
  setStatus(name + ': ' + res.width + '×' + res.height + ' — click a class to see what the model looks at');
}

// the photo at the server's decoded size: the browser's own decoding where it can, else the server's
async function photoFor(w, h) {
  if (state.photo && state.photo.width === w && state.photo.height === h) return state.photo;
  let bmp = null;
  try { bmp = await createImageBitmap(state.file, { imageOrientation: 'from-image' }); } catch (_) { bmp = null; }
  if (!bmp || bmp.width !== w || bmp.height !== h) {
    const r = await api('/v1/explain?picture=photo', { method: 'POST', body: upload() });
    bmp = await createImageBitmap(await r.blob());
  }
  state.photo = bmp;
  return bmp;
}

// ---- explanations --------------------------------------------------------------------------------------------

function chosenMethods() {
  return [...document.querySelectorAll('#methods input:checked')].map((c) => c.value);
}

let timer = null;
function reexplain() {
  if (state.cls === null) return;
  clearTimeout(timer);
  timer = setTimeout(() => guard(explain()), 250);
}

async function explain() {
  const methods = chosenMethods();
  if (methods.length === 0) { showError('Choose at least one method'); return; }
  showError('');
  const seq = ++state.seq;
  const q = new URLSearchParams();
  q.append('class', String(state.cls));
  q.append('method', methods.join(','));
  q.append('layer', $('layer').value);
  q.append('colormap', $('colormap').value);
  q.append('alpha', $('alpha').value);
  q.append('threshold', $('threshold').value);
  q.append('save-npy', 'true');
  // URLSearchParams writes a plus sign as %2B and a space as `+`, which the API reads as a plus sign: %20
  const query = q.toString().replace(/\+/g, '%20');
  setStatus('Explaining class ' + state.cls + ' with ' + methods.join(', ') + '…');
  const t0 = performance.now();
  const r = await api('/v1/explain?' + query, { method: 'POST', body: upload() });
  const j = await r.json();
  if (seq !== state.seq) return; // a newer request is on its way
  const res = j.results[0];
  const photo = await photoFor(res.width, res.height);
  if (seq !== state.seq) return;
  state.report = j;
  await render(res, photo);
  const ms = Math.round(performance.now() - t0);
  setStatus(res.explanations.length + ' explanation' + (res.explanations.length > 1 ? 's' : '') + ' of class ' + state.cls + ' in ' + ms + ' ms');
}

function clearResults() {
  state.cards = [];
  $('results').replaceChildren();
  $('grid-wrap').hidden = true;
  $('report-wrap').hidden = true;
}

function loadImage(src) {
  const img = new Image();
  img.src = src;
  return img.decode().then(() => img);
}

async function render(res, photo) {
  clearResults();
  const base = stem(state.name);
  for (const e of res.explanations) {
    const card = el('div', { className: 'card' });
    card.dataset.method = e.method;
    card.append(el('h3', { textContent: e.method + ' · ' + e.label + ' (' + e.class + ')' + (e.layers.length ? ' · ' + e.layers.join(', ') : '') }));
    const downloads = el('div', { className: 'downloads' });
    const name = base + '.' + e.class + '.' + e.method;
    if (e.files.overlay && e.files.heatmap) {
      const canvas = el('canvas', { width: res.width, height: res.height, className: 'overlay' });
      canvas.setAttribute('aria-label', e.method + ' overlay');
      card.append(canvas);
      const heat = await loadImage(e.files.heatmap);
      const c = { canvas, heat, box: e.box, photo };
      state.cards.push(c);
      draw(c);
      const dl = el('button', { type: 'button', textContent: 'PNG' });
      dl.addEventListener('click', () => canvas.toBlob((b) => saveBlob(b, name + '.overlay.png'), 'image/png'));
      downloads.append(dl);
    } else if (e.files.gradient) {
      card.append(el('img', { src: e.files.gradient, alt: e.method + ' gradient', className: 'gradient' }));
      downloads.append(el('a', { className: 'button', href: e.files.gradient, download: name + '.gradient.png', textContent: 'PNG' }));
    }
    if (e.files.mask) {
      const m = el('img', { src: e.files.mask, alt: 'threshold view', className: 'mask' });
      m.hidden = !$('show-mask').checked;
      card.append(m);
    }
    if (e.files.npy) downloads.append(el('a', { className: 'button', href: e.files.npy, download: name + '.npy', textContent: 'Map .npy' }));
    const one = el('button', { type: 'button', textContent: 'JSON' });
    one.addEventListener('click', () => saveBlob(new Blob([JSON.stringify(e, null, 1)], { type: 'application/json' }), name + '.json'));
    downloads.append(one);
    card.append(downloads);
    $('results').append(card);
  }
  if (res.grids.length > 0) {
    $('grid').src = res.grids[0].file;
    $('grid-download').href = res.grids[0].file;
    $('grid-download').download = base + '.' + res.grids[0].class + '.grid.png';
    $('grid-wrap').hidden = false;
  }
  const rep = $('report-download');
  if (rep.href.startsWith('blob:')) URL.revokeObjectURL(rep.href);
  rep.href = URL.createObjectURL(new Blob([JSON.stringify(state.report, null, 1)], { type: 'application/json' }));
  rep.download = base + '.report.json';
  $('report-wrap').hidden = false;
}

// the overlay blended here, so that the opacity slider needs no round trip: alpha·heat + (1 − alpha)·photo
function draw(c) {
  const ctx = c.canvas.getContext('2d');
  const a = Number($('alpha').value);
  ctx.globalAlpha = 1;
  ctx.drawImage(c.photo, 0, 0, c.canvas.width, c.canvas.height);
  ctx.globalAlpha = a;
  ctx.drawImage(c.heat, 0, 0, c.canvas.width, c.canvas.height);
  ctx.globalAlpha = 1;
  if ($('show-box').checked && c.box) {
    const b = c.box;
    const lw = Math.max(2, Math.round(c.canvas.width / 200));
    ctx.lineWidth = lw + 2;
    ctx.strokeStyle = 'rgba(0,0,0,0.8)';
    ctx.strokeRect(b.x0 + lw / 2, b.y0 + lw / 2, b.x1 - b.x0 - lw, b.y1 - b.y0 - lw);
    ctx.lineWidth = lw;
    ctx.strokeStyle = '#ffffff';
    ctx.strokeRect(b.x0 + lw / 2, b.y0 + lw / 2, b.x1 - b.x0 - lw, b.y1 - b.y0 - lw);
  }
}

function redrawAll() { for (const c of state.cards) draw(c); }

function saveBlob(blob, name) {
  const a = el('a', { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

window.addEventListener('unhandledrejection', (e) => showError(String(e.reason && e.reason.message || e.reason)));
guard(init());
