// keypool status page. It reads the server's snapshot stream (events) with
// fetch, so that it can send the admin token, and draws each snapshot in
// place: rows are kept by key ID, sections are rebuilt only when their data
// changed, and one interval ticks the countdowns. Every piece of text from
// the server goes in through textContent: sources and reasons come from
// config files and upstream errors.
'use strict';

const TOKEN_KEY = 'keypool-admin-token';
const BACKOFF_MIN = 1000;
const BACKOFF_MAX = 30000;
const MAX_EVENTS = 50;
const MAX_EVENT_BYTES = 16 << 20; // one snapshot larger than this is not a snapshot
const SVG = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);
const el = {
  live: $('live'),
  inFlight: $('in-flight'),
  usable: $('usable'),
  total: $('total-keys'),
  message: $('message'),
  form: $('token-form'),
  token: $('token'),
  forget: document.querySelector('[data-action="forget-token"]'),
  upstreams: $('upstreams'),
  filter: $('key-filter'),
  keysBody: $('keys').tBodies[0],
  keysEmpty: $('keys-empty'),
  budgets: $('budgets'),
  events: $('events'),
  eventsEmpty: $('events-empty'),
  chartSource: $('chart-source'),
  charts: {
    requests: $('chart-requests'),
    errors: $('chart-errors'),
    tokens: $('chart-tokens'),
  },
};

// ---- server clock -------------------------------------------------------

let clockOffset = 0; // server now − Date.now(), from the latest snapshot
const serverNow = () => Date.now() + clockOffset;

function parseTime(s) {
  if (!s || s.startsWith('0001-')) return NaN; // Go's zero time: not set
  return Date.parse(s);
}

function formatDuration(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

function formatAgo(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ago`;
  return `${Math.floor(h / 24)}d ago`;
}

const numberFormat = new Intl.NumberFormat();
const compactFormat = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 });
const fmt = (n) => numberFormat.format(n);

function clockTime(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

// ---- DOM helpers --------------------------------------------------------

// h builds an element; children are nodes or strings (set as text nodes).
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  if (attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'text') node.textContent = value;
      else node.setAttribute(name, value === true ? '' : String(value));
    }
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child);
  }
  return node;
}

// countdown is a span the ticker keeps counting down to until (ms).
function countdown(until) {
  const span = h('span', { class: 'countdown', 'data-until': new Date(until).toISOString() });
  tickCountdown(span, serverNow());
  return span;
}

function ago(at) {
  const t = h('time', { 'data-since': new Date(at).toISOString(), datetime: new Date(at).toISOString(), title: new Date(at).toLocaleString() });
  tickAgo(t, serverNow());
  return t;
}

function tickCountdown(span, now) {
  const left = Date.parse(span.dataset.until) - now;
  const text = left > 0 ? formatDuration(left) : '';
  if (span.textContent !== text) span.textContent = text;
}

function tickAgo(node, now) {
  const text = formatAgo(now - Date.parse(node.dataset.since));
  if (node.textContent !== text) node.textContent = text;
}

// The one interval of the page: countdowns, "ago" times, and the stall
// watchdog of the stream.
setInterval(() => {
  const now = serverNow();
  for (const span of document.querySelectorAll('[data-until]')) tickCountdown(span, now);
  for (const node of document.querySelectorAll('[data-since]')) tickAgo(node, now);
  stream.watchdog();
}, 1000);

// ---- messages -----------------------------------------------------------

// say shows text in the status line; fromStream marks a message about the
// connection, which the next snapshot clears.
function say(text, kind = 'ok', fromStream = false) {
  el.message.dataset.kind = kind;
  if (fromStream) el.message.dataset.stream = '1';
  else delete el.message.dataset.stream;
  el.message.textContent = text;
}

async function errorMessage(res) {
  try {
    const body = await res.json();
    if (body && body.error && typeof body.error.message === 'string') return body.error.message;
  } catch { /* not JSON */ }
  return `${res.status} ${res.statusText}`.trim();
}

// ---- token --------------------------------------------------------------

function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}

function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* storage refused: the token lasts as long as the stream */ }
  el.forget.hidden = !getToken();
}

function authHeaders(extra) {
  const headers = new Headers(extra);
  const token = getToken();
  if (token) headers.set('Authorization', `Bearer ${token}`);
  return headers;
}

function askToken(text, fromStream = false) {
  el.form.hidden = false;
  say(text, 'error', fromStream);
  el.token.focus();
}

el.form.addEventListener('submit', (e) => {
  e.preventDefault();
  const token = el.token.value.trim();
  el.token.value = '';
  if (!token) return;
  setToken(token);
  el.form.hidden = true;
  say('Connecting with the token…', 'ok', true);
  stream.connectNow();
});

// ---- the stream ---------------------------------------------------------

function setLive(live) {
  const state = live ? 'live' : 'offline';
  if (el.live.dataset.state === state && el.live.textContent !== 'connecting…') return;
  el.live.dataset.state = state;
  el.live.textContent = live ? 'live' : 'reconnecting…';
  document.body.dataset.live = state;
}

const stream = {
  controller: null, // aborts the current fetch and its reader
  timer: 0, // the pending reconnect, if any
  backoff: BACKOFF_MIN,
  lastByte: 0,
  stallMs: 30000,

  connectNow() {
    clearTimeout(this.timer);
    this.timer = 0;
    this.backoff = BACKOFF_MIN;
    this.connect();
  },

  retry() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => { this.timer = 0; this.connect(); }, this.backoff);
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX);
  },

  // watchdog ends a stream that went silent: the server pushes a snapshot
  // every interval_ms, so a long silence is a dead connection.
  watchdog() {
    if (this.controller && this.lastByte && Date.now() - this.lastByte > this.stallMs) {
      this.controller.abort();
    }
  },

  async connect() {
    if (this.controller) this.controller.abort();
    const controller = new AbortController();
    this.controller = controller;
    this.lastByte = Date.now();
    let reader = null;
    let retry = true;
    try {
      const res = await fetch('events', {
        headers: authHeaders({ Accept: 'text/event-stream' }),
        cache: 'no-store',
        signal: controller.signal,
      });
      if (res.status === 401) {
        retry = false;
        const had = getToken() !== '';
        setToken('');
        askToken(had ? 'The admin token was refused; enter it again.' : 'This keypool needs its admin token.', true);
        await res.body?.cancel();
        return;
      }
      if (!res.ok || !res.body) {
        say(await errorMessage(res), 'error', true);
        return;
      }
      reader = res.body.getReader();
      await readEvents(reader, controller, (data) => {
        let snapshot;
        try {
          snapshot = JSON.parse(data);
        } catch {
          return; // a torn or foreign event: the next one is due in interval_ms
        }
        if (el.message.dataset.stream && el.live.dataset.state !== 'live') say('');
        this.backoff = BACKOFF_MIN;
        this.stallMs = Math.max(30000, 10 * (snapshot.interval_ms || 0));
        setLive(true);
        try {
          render(snapshot);
        } catch (err) {
          // A page bug should not drop the stream; log it, without the data.
          console.error('keypool status: could not draw a snapshot:', err instanceof Error ? err.message : String(err));
        }
      }, () => { this.lastByte = Date.now(); });
    } catch {
      // A network error, a bad event, or our own abort: the live indicator
      // says so, and finally schedules the next attempt.
    } finally {
      if (reader) {
        reader.cancel().catch(() => {});
        reader.releaseLock();
      }
      if (this.controller === controller) {
        this.controller = null;
        setLive(false);
        if (retry) this.retry();
      }
    }
  },
};

// readEvents parses the text/event-stream from reader and calls onSnapshot
// with each snapshot event's data; onBytes on every chunk (pings included).
async function readEvents(reader, controller, onSnapshot, onBytes) {
  const decoder = new TextDecoder();
  let buf = '';
  let event = '';
  let data = [];
  let dataBytes = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onBytes();
    buf += decoder.decode(value, { stream: true });
    let start = 0;
    for (let nl = buf.indexOf('\n', start); nl !== -1; nl = buf.indexOf('\n', start)) {
      let line = buf.slice(start, nl);
      start = nl + 1;
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') { // end of an event
        if ((event === '' || event === 'snapshot') && data.length) onSnapshot(data.join('\n'));
        event = '';
        data = [];
        dataBytes = 0;
        continue;
      }
      if (line.startsWith(':')) continue; // a comment: ping
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      let val = colon === -1 ? '' : line.slice(colon + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'event') event = val;
      else if (field === 'data') { data.push(val); dataBytes += val.length; }
    }
    buf = buf.slice(start);
    if (buf.length + dataBytes > MAX_EVENT_BYTES) {
      controller.abort();
      throw new Error('event too large');
    }
  }
}

// ---- rendering ----------------------------------------------------------

// Each section remembers the JSON it last drew and is redrawn only when that
// changes, so an unchanged section keeps its focus, scroll and open details.
const drawn = { header: '', upstreams: '', budgets: '', minutes: '', events: '' };

function changed(part, value) {
  const json = JSON.stringify(value ?? null);
  if (drawn[part] === json) return false;
  drawn[part] = json;
  return true;
}

function render(snap) {
  const now = parseTime(snap.now);
  if (!Number.isNaN(now)) clockOffset = now - Date.now();

  const keys = Array.isArray(snap.keys) ? snap.keys : [];
  const total = Number.isFinite(snap.keys_total) ? snap.keys_total : keys.length;
  if (changed('header', [snap.in_flight, snap.counts, keys.length, total])) {
    el.inFlight.textContent = fmt(snap.in_flight || 0);
    el.usable.textContent = fmt(snap.counts?.usable || 0);
    // A large pool's snapshot lists the first keys only; the counts cover all.
    el.total.textContent = total > keys.length ? `${fmt(total)} (${fmt(keys.length)} listed)` : fmt(total);
  }
  if (changed('upstreams', snap.upstreams)) renderUpstreams(snap.upstreams || []);
  renderKeys(keys);
  if (changed('budgets', snap.budgets)) renderBudgets(snap.budgets || []);
  if (changed('minutes', snap.minutes)) renderMinutes(snap.minutes);
  if (changed('events', snap.events)) renderEvents(snap.events || []);
}

const STATE_ORDER = ['ready', 'unchecked', 'cooling', 'over_quota', 'revoked', 'disabled'];

function stateLabel(state) {
  return state.replace('_', ' ');
}

function stateChips(states) {
  const list = h('ul', { class: 'chips' });
  const names = Object.keys(states || {}).sort((a, b) => {
    const ia = STATE_ORDER.indexOf(a), ib = STATE_ORDER.indexOf(b);
    return (ia === -1 ? 99 : ia) - (ib === -1 ? 99 : ib);
  });
  for (const name of names) {
    if (!states[name]) continue;
    list.append(h('li', { class: 'chip', 'data-state': name }, `${fmt(states[name])} ${stateLabel(name)}`));
  }
  return list;
}

function renderUpstreams(upstreams) {
  if (!upstreams.length) {
    el.upstreams.replaceChildren(h('p', { class: 'empty', text: 'No upstreams.' }));
    return;
  }
  el.upstreams.replaceChildren(...upstreams.map((u) => h('article', { class: 'card', 'data-upstream': u.name },
    h('h3', null, h('span', { text: u.name }), ' ', h('span', { class: 'tag', text: u.type })),
    h('p', { class: 'muted', text: `${fmt(u.keys || 0)} key${u.keys === 1 ? '' : 's'}` }),
    stateChips(u.states),
  )));
}

// ---- keys table ---------------------------------------------------------

// rows holds, by key ID, its <tr> and the text each cell was last drawn
// from; entries go when their key leaves the snapshot.
const rows = new Map();
// pending holds "action key" while that request runs, so that a row
// redrawn meanwhile keeps its button disabled.
const pending = new Set();

const FIELDS = ['id', 'source', 'upstream', 'scope', 'state', 'reason', 'trial', 'models', 'cooldown', 'in_flight', 'last_used', 'actions'];

// cell draws one field of key k into td; its return value is what decides
// whether the cell needs drawing again.
const cellSig = {
  id: (k) => k.id + (k.clone ? ' clone' : '') + (k.organization || ''),
  source: (k) => k.source || '',
  upstream: (k) => k.upstream || '',
  scope: (k) => k.scope || '',
  state: (k) => k.state,
  reason: (k) => k.reason || '',
  trial: (k) => (k.trial ? 'trial' : ''),
  models: (k) => JSON.stringify([k.models, k.lacks, k.no_stream]),
  cooldown: (k) => k.cooling_until || '',
  in_flight: (k) => String(k.in_flight || 0),
  last_used: (k) => k.last_used || '',
  actions: (k) => k.state,
};

const cellDraw = {
  id(td, k) {
    td.replaceChildren(h('code', { text: k.id }));
    if (k.clone) td.append(' ', h('span', { class: 'tag', title: 'an organization clone of a key', text: 'clone' }));
    if (k.organization) td.title = `organization ${k.organization}`;
    else td.removeAttribute('title');
  },
  source(td, k) {
    td.textContent = k.source || '';
    td.title = k.source || ''; // the cell may cut a long path short
  },
  upstream(td, k) { td.textContent = k.upstream || ''; },
  scope(td, k) {
    // "key:<id>" may break after its colon, not inside the ID.
    const scope = k.scope || '';
    const colon = scope.indexOf(':');
    if (colon === -1) td.replaceChildren(h('span', { class: 'nowrap', text: scope }));
    else td.replaceChildren(h('span', null, scope.slice(0, colon + 1), document.createElement('wbr'), h('span', { class: 'nowrap', text: scope.slice(colon + 1) })));
  },
  state(td, k) {
    td.textContent = k.state;
    td.dataset.state = k.state;
  },
  reason(td, k) { td.textContent = k.reason || ''; },
  trial(td, k) { td.textContent = k.trial ? 'trial' : ''; },
  models(td, k) {
    const models = k.models || [];
    const wasOpen = td.querySelector('details')?.open;
    if (!models.length) { td.textContent = '0'; return; }
    const list = h('ul', { class: 'models' }, ...models.map((m) => h('li', { text: m })));
    const lacks = k.lacks || [];
    const noStream = k.no_stream || [];
    const details = h('details', null,
      h('summary', { title: models.join(', '), text: fmt(models.length) }),
      list,
      lacks.length ? h('p', { class: 'muted', text: `lacks: ${lacks.join(', ')}` }) : null,
      noStream.length ? h('p', { class: 'muted', text: `no stream: ${noStream.join(', ')}` }) : null,
    );
    details.open = !!wasOpen;
    td.replaceChildren(details);
  },
  cooldown(td, k) {
    const until = parseTime(k.cooling_until);
    td.replaceChildren(Number.isNaN(until) ? '' : countdown(until));
  },
  in_flight(td, k) { td.textContent = fmt(k.in_flight || 0); },
  last_used(td, k) {
    const at = parseTime(k.last_used);
    td.replaceChildren(Number.isNaN(at) ? h('span', { class: 'muted', text: 'never' }) : ago(at));
  },
  actions(td, k) {
    const toggle = k.state === 'disabled' ? 'enable' : 'disable';
    const focused = td.contains(document.activeElement) ? document.activeElement.dataset.action : '';
    const buttons = [
      h('button', { type: 'button', 'data-action': toggle, 'data-key': k.id,
        disabled: pending.has(`${toggle} ${k.id}`), text: toggle === 'enable' ? 'Enable' : 'Disable' }),
      h('button', { type: 'button', 'data-action': 'recheck', 'data-key': k.id,
        disabled: pending.has(`recheck ${k.id}`), text: 'Recheck' }),
    ];
    td.replaceChildren(...buttons);
    if (focused) (buttons.find((b) => b.dataset.action === focused) || buttons[0]).focus();
  },
};

function newRow(id) {
  const tr = h('tr', { 'data-key': id });
  const cells = {};
  for (const f of FIELDS) {
    const td = h(f === 'id' ? 'th' : 'td', { 'data-field': f });
    if (f === 'id') td.setAttribute('scope', 'row');
    if (f === 'in_flight') td.className = 'num';
    if (f === 'actions') td.className = 'actions';
    cells[f] = td;
    tr.append(td);
  }
  return { tr, cells, sigs: {}, key: null };
}

function updateRow(row, k) {
  row.key = k;
  for (const f of FIELDS) {
    const sig = cellSig[f](k);
    if (row.sigs[f] === sig) continue;
    row.sigs[f] = sig;
    cellDraw[f](row.cells[f], k);
  }
  row.tr.dataset.state = k.state;
  row.search = [k.id, k.source, k.state, k.scope, k.upstream].join(' ').toLowerCase();
  applyFilter(row);
}

function renderKeys(keys) {
  const seen = new Set();
  let prev = null;
  for (const k of keys) {
    if (!k || typeof k.id !== 'string' || seen.has(k.id)) continue;
    seen.add(k.id);
    let row = rows.get(k.id);
    if (!row) {
      row = newRow(k.id);
      rows.set(k.id, row);
    }
    updateRow(row, k);
    // Keep pool order, moving a row only when it is out of place.
    const want = prev ? prev.nextSibling : el.keysBody.firstChild;
    if (want !== row.tr) el.keysBody.insertBefore(row.tr, want);
    prev = row.tr;
  }
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      rows.delete(id);
    }
  }
  updateKeysEmpty();
}

function applyFilter(row) {
  const q = el.filter.value.trim().toLowerCase();
  const hide = q !== '' && !q.split(/\s+/).every((word) => row.search.includes(word));
  if (row.tr.hidden !== hide) row.tr.hidden = hide;
}

function updateKeysEmpty() {
  let text = '';
  if (rows.size === 0) text = 'No keys.';
  else if (el.filter.value.trim() && ![...rows.values()].some((r) => !r.tr.hidden)) text = 'No key matches the filter.';
  el.keysEmpty.textContent = text;
  el.keysEmpty.hidden = text === '';
}

el.filter.addEventListener('input', () => {
  for (const row of rows.values()) applyFilter(row);
  updateKeysEmpty();
});

// ---- budgets ------------------------------------------------------------

function meter(remaining, limit, label) {
  if (limit == null || limit < 0 || remaining == null || remaining < 0) {
    return h('div', { class: 'meter unknown' }, h('span', { class: 'meter-text muted', text: 'unknown' }));
  }
  const frac = limit > 0 ? Math.min(1, Math.max(0, remaining / limit)) : 0;
  const bar = h('div', { class: 'bar', 'aria-hidden': 'true' });
  const fill = h('div', { class: 'fill' });
  fill.style.width = `${(frac * 100).toFixed(1)}%`; // element.style is allowed by the CSP
  fill.dataset.level = frac < 0.1 ? 'low' : frac < 0.3 ? 'mid' : 'ok';
  bar.append(fill);
  return h('div', { class: 'meter', title: `${fmt(remaining)} of ${fmt(limit)} ${label} remaining` },
    bar, h('span', { class: 'meter-text', text: `${fmt(remaining)} / ${fmt(limit)}` }));
}

function renderBudgets(budgets) {
  if (!budgets.length) {
    el.budgets.replaceChildren(h('p', { class: 'empty', text: 'No budgets known yet.' }));
    return;
  }
  el.budgets.replaceChildren(...budgets.map((b) => {
    const keys = b.keys || [];
    const models = b.models || [];
    const body = h('tbody', null, ...models.map((m) => {
      const until = parseTime(m.cooling_until);
      return h('tr', { 'data-model': m.model },
        h('th', { scope: 'row', text: m.model }),
        h('td', { 'data-field': 'requests' }, meter(m.remaining_requests, m.limit_requests, 'requests')),
        h('td', { 'data-field': 'tokens' }, meter(m.remaining_tokens, m.limit_tokens, 'tokens')),
        h('td', { 'data-field': 'in_flight', class: 'num', text: fmt(m.in_flight || 0) }),
        h('td', { 'data-field': 'window', text: m.windowed ? 'windowed' : '' }),
        h('td', { 'data-field': 'cooling' }, Number.isNaN(until) ? null : countdown(until)),
      );
    }));
    return h('article', { class: 'budget', 'data-scope': b.scope },
      h('h3', null, h('span', { text: b.scope }), ' ',
        h('span', { class: 'muted', title: keys.join(', '), text: `${fmt(keys.length)} key${keys.length === 1 ? '' : 's'}` })),
      models.length
        ? h('div', { class: 'table-wrap' }, h('table', { class: 'budget-table' },
          h('thead', null, h('tr', null,
            h('th', { scope: 'col', text: 'Model' }),
            h('th', { scope: 'col', text: 'Requests left' }),
            h('th', { scope: 'col', text: 'Tokens left' }),
            h('th', { scope: 'col', class: 'num', text: 'In flight' }),
            h('th', { scope: 'col', text: 'Window' }),
            h('th', { scope: 'col', text: 'Cooling' }))),
          body))
        : h('p', { class: 'empty', text: 'No model limits known yet.' }),
    );
  }));
}

// ---- charts -------------------------------------------------------------

const SERIES = {
  requests: { unit: 'requests' },
  errors: { unit: 'errors' },
  tokens: { unit: 'tokens' },
};

function renderMinutes(minutes) {
  const start = parseTime(minutes?.start);
  for (const [name, plot] of Object.entries(el.charts)) {
    const values = Array.isArray(minutes?.[name]) ? minutes[name].slice(-60) : [];
    plot.replaceChildren(barChart(values, start, SERIES[name].unit));
    const meta = plot.parentElement.querySelector('[data-meta]');
    const max = values.reduce((a, b) => Math.max(a, b || 0), 0);
    const total = values.reduce((a, b) => a + (b || 0), 0);
    meta.textContent = values.length ? `max ${compactFormat.format(max)} · total ${compactFormat.format(total)}` : 'no data';
  }
  const source = minutes?.source;
  el.chartSource.textContent = source
    ? `Counted from ${source === 'records' ? 'the request records' : 'memory (since this keypool started)'}; one bar per minute, the last is the current minute.`
    : '';
}

// barChart draws up to 60 values as an SVG whose bars stretch to the plot's
// width; the labels stay in HTML so that they keep their size on a phone.
function barChart(values, start, unit) {
  const W = 600, H = 120, slots = 60;
  const slot = W / slots;
  const max = values.reduce((a, b) => Math.max(a, b || 0), 0);
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `${unit} per minute over the last hour, at most ${fmt(max)}`);
  const grid = document.createElementNS(SVG, 'path');
  grid.setAttribute('class', 'grid');
  grid.setAttribute('d', `M0 ${H / 2}H${W}M0 ${H - 0.5}H${W}`);
  svg.append(grid);
  const offset = slots - values.length; // right-align: the last value is now
  values.forEach((v, i) => {
    if (!v) return;
    const hgt = Math.max(1, (v / max) * (H - 4));
    const rect = document.createElementNS(SVG, 'rect');
    rect.setAttribute('x', ((offset + i) * slot + slot * 0.12).toFixed(2));
    rect.setAttribute('width', (slot * 0.76).toFixed(2));
    rect.setAttribute('y', (H - hgt).toFixed(2));
    rect.setAttribute('height', hgt.toFixed(2));
    const title = document.createElementNS(SVG, 'title');
    const at = Number.isNaN(start) ? '' : new Date(start + i * 60000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) + ': ';
    title.textContent = `${at}${fmt(v)} ${unit}`;
    rect.append(title);
    svg.append(rect);
  });
  return svg;
}

// ---- events -------------------------------------------------------------

function eventText(e) {
  if (e.kind === 'failover') {
    let text = `failover: ${e.status || ''} ${e.outcome || ''}`.replace(/\s+/g, ' ').trim();
    if (e.model) text += ` · ${e.model}`;
    return text;
  }
  let text = `${e.from || '?'} → ${e.to || '?'}`;
  if (e.reason) text += ` (${e.reason})`;
  if (e.model) text += ` · ${e.model}`;
  const until = parseTime(e.until);
  if (!Number.isNaN(until)) text += ` · until ${clockTime(until)}`;
  return text;
}

function renderEvents(events) {
  const items = events.slice(0, MAX_EVENTS).map((e) => {
    const at = parseTime(e.at);
    return h('li', { 'data-kind': e.kind === 'failover' ? 'failover' : 'state', 'data-to': e.to },
      h('time', { datetime: Number.isNaN(at) ? null : new Date(at).toISOString(), text: Number.isNaN(at) ? '' : clockTime(at) }),
      h('code', { class: 'event-key', text: e.key || '' }),
      h('span', { class: 'event-text', text: eventText(e) }),
      e.upstream ? h('span', { class: 'tag', text: e.upstream }) : null,
    );
  });
  el.events.replaceChildren(...items);
  el.eventsEmpty.textContent = items.length ? '' : 'No events yet.';
  el.eventsEmpty.hidden = items.length > 0;
}

// ---- actions ------------------------------------------------------------

const ACTIONS = {
  disable: { path: (id) => `../admin/keys/${encodeURIComponent(id)}/disable`, body: { reason: 'disabled from the status page' }, done: (id) => `${id} disabled` },
  enable: { path: (id) => `../admin/keys/${encodeURIComponent(id)}/enable`, done: (id) => `${id} enabled` },
  recheck: { path: (id) => `../admin/keys/${encodeURIComponent(id)}/recheck`, done: (id) => `${id}: recheck scheduled` },
  'recheck-all': { path: () => '../admin/keys/recheck', done: () => 'Recheck of every key scheduled' },
};

async function runAction(button) {
  const action = button.dataset.action;
  const spec = ACTIONS[action];
  const id = button.dataset.key || '';
  const busy = `${action} ${id}`;
  if (pending.has(busy)) return;
  pending.add(busy);
  button.disabled = true;
  try {
    const res = await fetch(spec.path(id), {
      method: 'POST',
      headers: authHeaders(spec.body ? { 'Content-Type': 'application/json' } : undefined),
      body: spec.body ? JSON.stringify(spec.body) : undefined,
      cache: 'no-store',
    });
    if (res.status === 401) {
      setToken('');
      askToken('The admin token was refused; enter it again.');
      return;
    }
    if (!res.ok) {
      say(await errorMessage(res), 'error');
      return;
    }
    if (res.status === 200 && id) {
      const info = await res.json().catch(() => null);
      const row = rows.get(id);
      if (info && info.id === id && row) updateRow(row, info);
    }
    say(spec.done(id));
  } catch {
    say('Could not reach keypool.', 'error');
  } finally {
    pending.delete(busy);
    // The row may have been redrawn meanwhile: enable whichever button is now there.
    const live = id ? rows.get(id)?.tr.querySelector(`button[data-action="${action}"]`) : button;
    if (live) live.disabled = false;
    if (button.isConnected) button.disabled = false;
  }
}

// The page's one click listener: every button says what it does in
// data-action (and data-key for one key).
document.body.addEventListener('click', (e) => {
  const button = e.target instanceof Element ? e.target.closest('button[data-action]') : null;
  if (!button || button.disabled) return;
  const action = button.dataset.action;
  if (action === 'forget-token') {
    setToken('');
    say('Token forgotten.');
    stream.connectNow();
    return;
  }
  if (ACTIONS[action]) runAction(button);
});

// ---- start --------------------------------------------------------------

el.forget.hidden = !getToken();
stream.connect();
