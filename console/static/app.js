// The registry's web console: hash-routed views over the node's HTTP API
// (same-origin, Authorization: Bearer from sessionStorage) and its console
// endpoints (/ui/api/...). No framework, no inline script or style: DOM
// built with createElement, changes rendered at most once an animation
// frame.

const TOKEN_KEY = 'registry.console.token';
const FEED_CAP = 500; // events kept on the events page
const PAGE_SIZE = 100; // instances per page on the service page
const OVERVIEW_EVERY_MS = 2000;
const SERVICES_EVERY_MS = 2000;
const BEATS_EVERY_MS = 3000; // the service page's refresh of last beats (15 s above 2,000 instances)
const HISTORY_BACK = 200; // Raft entries of history the events page starts with

// ---------- small helpers ----------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k === 'class') e.className = v;
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function badge(text, cls = text) {
  return el('span', { class: `badge ${cls}`, text });
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

class APIError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json', ...authHeaders() };
  const init = { method, headers, cache: 'no-store', credentials: 'same-origin' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) throw new APIError(res.status, (data && data.message) || res.statusText);
  return data;
}

function explain(err) {
  if (err instanceof APIError && err.status === 401) return 'This node has ACLs on: enter a token above. (' + err.message + ')';
  if (err instanceof APIError && err.status === 403) return 'Your token may not do this: ' + err.message;
  return err && err.message ? err.message : String(err);
}

let noticeTimer = 0;
function notice(msg, ok = false) {
  const n = document.getElementById('notice');
  n.textContent = msg;
  n.classList.toggle('ok', ok);
  n.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { n.hidden = true; }, 6000);
}

// seconds parses a protojson Duration ("1.500s").
function seconds(d) { return d ? parseFloat(d) : 0; }

function fmtDuration(s) {
  if (!isFinite(s)) return '–';
  const a = Math.abs(s);
  if (a < 1) return `${Math.round(s * 1000)}ms`;
  if (a < 60) return `${(Math.round(s * 10) / 10)}s`;
  if (a < 3600) return `${Math.floor(s / 60)}m${Math.round(s % 60)}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

function fmtAge(iso) {
  if (!iso) return '–';
  const t = Date.parse(iso);
  if (isNaN(t)) return '–';
  return fmtDuration(Math.max(0, (Date.now() - t) / 1000)) + ' ago';
}

function fmtTime(iso) {
  const t = iso ? new Date(iso) : new Date();
  return isNaN(t) ? '' : t.toLocaleTimeString([], { hour12: false });
}

const num = (n) => (n === undefined || n === null ? '–' : Number(n).toLocaleString());

// eventType strips the enum prefix: EVENT_TYPE_SUSPECT -> SUSPECT.
const eventType = (t) => String(t || '').replace(/^EVENT_TYPE_/, '');
const instanceState = (s) => String(s || '').replace(/^INSTANCE_STATE_/, '');

// sparkline draws values (one a second, newest last) as an SVG polyline
// over a window of SPARK_WINDOW seconds, scaled to the window's maximum.
const SPARK_WINDOW = 120;
function sparkline(values, cls, label) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', `spark ${cls}`);
  svg.setAttribute('viewBox', `0 0 ${SPARK_WINDOW} 40`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  const maxV = Math.max(1, ...values);
  svg.setAttribute('aria-label', `${label}: last ${num(values.length ? values[values.length - 1] : 0)}, peak ${num(Math.max(0, ...values))}`);
  const base = document.createElementNS(ns, 'line');
  base.setAttribute('class', 'base');
  for (const [k, v] of [['x1', 0], ['x2', SPARK_WINDOW], ['y1', 39], ['y2', 39]]) base.setAttribute(k, v);
  svg.append(base);
  const start = SPARK_WINDOW - values.length;
  const pts = values.map((v, i) => `${start + i},${39 - (36 * v) / maxV}`);
  if (pts.length === 1) pts.unshift(`${start - 1},39`);
  if (pts.length) {
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('points', pts.join(' '));
    svg.append(line);
  }
  return svg;
}

// whoami asks what the token may do; with ACLs off, everything.
async function whoami(service) {
  return api('GET', '/ui/api/whoami' + (service ? `?service=${encodeURIComponent(service)}` : ''));
}

// ---------- Server-Sent Events over fetch (so the token goes in a header) ----------

class EventStream {
  // path is the URL, or a function that returns it for each connection.
  constructor(path, { onMessage, onState }) {
    this.path = typeof path === 'function' ? path : () => path;
    this.onMessage = onMessage;
    this.onState = onState;
    this.ctrl = null;
    this.stopped = false;
    this.retry = 0;
  }

  start() { this.loop().catch(() => {}); return this; }

  stop() {
    this.stopped = true;
    clearTimeout(this.retry);
    if (this.ctrl) this.ctrl.abort();
  }

  async loop() {
    while (!this.stopped) {
      let again = true;
      try {
        again = await this.once();
      } catch (err) {
        if (this.stopped) return;
        this.onState('error', explain(err));
        if (err instanceof APIError && (err.status === 401 || err.status === 403 || err.status === 400)) again = false;
      }
      if (!again || this.stopped) return;
      await new Promise((r) => { this.retry = setTimeout(r, 1000); });
    }
  }

  // once reads one stream until it ends; it reports whether to reconnect.
  async once() {
    this.ctrl = new AbortController();
    const res = await fetch(this.path(), {
      headers: { Accept: 'text/event-stream', ...authHeaders() }, cache: 'no-store', signal: this.ctrl.signal,
    });
    if (!res.ok) {
      let msg = res.statusText;
      try { msg = (await res.json()).message || msg; } catch { /* not JSON */ }
      throw new APIError(res.status, msg);
    }
    this.onState('live', 'live');
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut;
      let from = 0;
      while ((cut = buf.indexOf('\n\n', from)) >= 0) {
        const block = buf.slice(from, cut);
        from = cut + 2;
        let event = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
        }
        if (!data.length) continue;
        const payload = JSON.parse(data.join('\n'));
        if (event === 'watch') this.onMessage(payload);
        else if (event === 'overflow') { this.onState('reconnecting', payload.message); return true; }
        else if (event === 'error') { this.onState('error', payload.message); return true; }
      }
      buf = buf.slice(from);
    }
    this.onState('reconnecting', 'the stream ended; reconnecting');
    return true;
  }
}

// ---------- views ----------

class OverviewView {
  mount(main) {
    this.main = main;
    this.body = el('div', { id: 'overview' }, el('p', { class: 'empty', text: 'Loading…' }));
    main.replaceChildren(el('h1', { tabindex: '-1', text: 'Overview' }), this.body);
    this.timer = 0;
    this.alive = true;
    this.perm = null;
    this.tick();
  }

  unmount() { this.alive = false; clearTimeout(this.timer); }

  async tick() {
    try {
      if (!this.perm) this.perm = await whoami();
      const ov = await api('GET', '/ui/api/overview');
      if (this.alive) this.render(ov);
    } catch (err) {
      if (this.alive) this.body.replaceChildren(el('p', { class: 'error', text: explain(err) }));
    }
    if (this.alive) this.timer = setTimeout(() => this.tick(), OVERVIEW_EVERY_MS);
  }

  render(ov) {
    document.getElementById('node-name').textContent = `· ${ov.node_id} (${ov.role})`;
    const leader = ov.members.find((m) => m.leader);
    const lv = ov.liveness;
    const rows = ov.members.map((m) => el('tr', { dataset: { member: m.id } },
      el('th', { scope: 'row' }, m.http_address ? el('a', { id: `member-${m.id}`, href: `${location.protocol}//${m.http_address}/ui/`, text: m.id }) : m.id,
        m.self ? el('span', { class: 'muted', text: ' (this node)' }) : null),
      el('td', {}, m.error ? el('span', { class: 'error', text: m.error }) : badge(m.role || '?', m.role)),
      el('td', { class: 'num', text: num(m.term) }),
      el('td', { class: 'num', text: num(m.applied_index) }),
      el('td', { class: 'num opt', text: num(m.commit_index) }),
      el('td', { class: 'num', text: m.error ? '–' : num(m.lag) }),
      el('td', { class: 'num opt last-contact', text: m.leader ? 'leads' : m.last_contact_ms >= 0 ? fmtDuration(m.last_contact_ms / 1000) + ' ago' : '–' }),
      el('td', { class: 'num opt', text: m.clock_skew_ms === null || m.clock_skew_ms === undefined ? (m.leader ? '0 (reference)' : '–') : fmtDuration(m.clock_skew_ms / 1000) }),
      el('td', { class: 'mono opt', text: m.grpc_address || '–' })));
    const members = el('section', { class: 'card', 'aria-labelledby': 'members-h' },
      el('h2', { id: 'members-h', text: `Members (${ov.members.length})` }),
      el('div', { class: 'table-wrap' }, el('table', { id: 'members', class: 'members' },
        el('thead', {}, el('tr', {},
          ['Node', 'Role', 'Term', 'Applied', 'Commit', 'Lag', 'Last contact', 'Clock skew', 'gRPC address'].map((h, i) =>
            el('th', { scope: 'col', class: [i >= 2 && i <= 7 ? 'num' : '', [4, 6, 7, 8].includes(i) ? 'opt' : ''].join(' ').trim() || null, text: h })))),
        el('tbody', {}, rows))));

    const release = this.perm && this.perm.operator_write && lv.expiry_guard_engaged
      ? el('button', { type: 'button', class: 'danger', id: 'release-guard', text: 'Release the guard', on: { click: (e) => this.release(e.target) } })
      : null;
    const cluster = el('section', { class: 'card', 'aria-labelledby': 'cluster-h' },
      el('h2', { id: 'cluster-h', text: 'Cluster' }),
      el('dl', { class: 'facts' },
        el('dt', { text: 'Leader' }), el('dd', { id: 'leader', text: leader ? leader.id : 'none known' }),
        el('dt', { text: 'Term' }), el('dd', { text: num(ov.term) }),
        el('dt', { text: 'This node' }), el('dd', { text: `${ov.node_id} (${ov.role})` })));
    const liveness = el('section', { class: 'card', 'aria-labelledby': 'liveness-h' },
      el('h2', { id: 'liveness-h', text: 'Liveness' }),
      lv.known ? el('dl', { class: 'facts' },
        el('dt', { text: 'Checker' }), el('dd', {}, lv.checker_running ? badge('running', 'yes') : badge('stopped', 'bad')),
        el('dt', { text: 'Failover fence' }), el('dd', { text: lv.failover_fence_remaining_ms > 0 ? fmtDuration(lv.failover_fence_remaining_ms / 1000) + ' left' : 'none' }),
        el('dt', { text: 'Expiry guard' }), el('dd', { id: 'guard' },
          lv.expiry_guard_engaged ? badge(`engaged, ${lv.expiries_held} held`, 'warn') : badge('clear', 'yes'),
          lv.expiry_guard_released ? ' (released)' : '', ' ', release))
        : el('p', { class: 'muted', text: 'No leader answered: checker state unknown.' }));
    const t = ov.totals;
    const totals = el('section', { class: 'card', 'aria-labelledby': 'totals-h' },
      el('h2', { id: 'totals-h', text: 'Instances' }),
      t ? el('div', { class: 'totals' },
        el('div', {}, el('span', { text: 'Services' }), el('a', { class: 'big', href: '#/services', id: 'total-services', text: num(t.services) })),
        el('div', {}, el('span', { text: 'Healthy' }), el('div', { class: 'big', id: 'total-healthy', text: num(t.healthy) })),
        el('div', {}, el('span', { text: 'Suspect' }), el('div', { class: 'big', id: 'total-suspect', text: num(t.suspect) })))
        : el('p', { class: 'error', text: ov.totals_error || 'unknown' }));
    const s = ov.series;
    const last = (xs) => (xs.length ? xs[xs.length - 1] : 0);
    const rates = el('section', { class: 'card', 'aria-labelledby': 'rates-h' },
      el('h2', { id: 'rates-h', text: 'Last two minutes (this node)' }),
      el('p', {}, 'Beats received: ', el('strong', { text: `${num(last(s.beats_per_second))}/s` })),
      sparkline(s.beats_per_second, 'beats', 'Beats per second received by this node'),
      el('p', {}, 'Expirations: ', el('strong', { text: `${num(last(s.expirations_per_second))}/s` })),
      sparkline(s.expirations_per_second, 'exp', 'Expirations per second'));
    // Redrawn every few seconds: keep the keyboard focus where it was.
    const focused = document.activeElement && this.body.contains(document.activeElement) ? document.activeElement.id : '';
    this.body.replaceChildren(el('div', { class: 'grid' }, cluster, liveness, totals, rates), members);
    if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
  }

  async release(button) {
    button.disabled = true;
    try {
      const r = await api('POST', '/ui/api/expiry-guard/release', {});
      notice(r && r.was_engaged ? `Guard released (${r.held} held).` : 'The guard was not engaged.', true);
    } catch (err) {
      notice(explain(err));
    }
    this.perm = null;
  }
}

class ServicesView {
  mount(main) {
    this.alive = true;
    this.sort = { key: 'service', dir: 1 };
    this.data = [];
    this.search = el('input', { type: 'search', id: 'service-search', placeholder: 'name contains…', on: { input: () => this.render() } });
    this.status = el('span', { class: 'status', role: 'status' });
    this.tbody = el('tbody');
    const head = (key, label, cls) => el('th', { scope: 'col', class: cls, 'aria-sort': 'none', dataset: { key } },
      el('button', { type: 'button', text: label, on: { click: () => this.sortBy(key) } }));
    this.heads = [head('service', 'Service'), head('healthy', 'Healthy', 'num'), head('suspect', 'Suspect', 'num')];
    main.replaceChildren(el('h1', { tabindex: '-1', text: 'Services' }),
      el('div', { class: 'toolbar' }, el('label', {}, 'Search', this.search), this.status),
      el('section', { class: 'card' }, el('div', { class: 'table-wrap' },
        el('table', { id: 'services' }, el('thead', {}, el('tr', {}, this.heads)), this.tbody))));
    this.tick();
  }

  unmount() { this.alive = false; clearTimeout(this.timer); }

  sortBy(key) {
    this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : key === 'service' ? 1 : -1 };
    this.render();
  }

  async tick() {
    try {
      const r = await api('GET', '/v1/services');
      if (!this.alive) return;
      this.data = r.services || [];
      this.status.textContent = `index ${num(r.index)}`;
      this.render();
    } catch (err) {
      if (this.alive) this.status.textContent = explain(err);
    }
    if (this.alive) this.timer = setTimeout(() => this.tick(), SERVICES_EVERY_MS);
  }

  render() {
    const q = this.search.value.trim().toLowerCase();
    const { key, dir } = this.sort;
    const rows = this.data.filter((s) => s.service.toLowerCase().includes(q));
    rows.sort((a, b) => (key === 'service' ? a.service.localeCompare(b.service) : (a[key] - b[key]) || a.service.localeCompare(b.service)) * dir);
    for (const th of this.heads) th.setAttribute('aria-sort', th.dataset.key === key ? (dir > 0 ? 'ascending' : 'descending') : 'none');
    this.tbody.replaceChildren(...(rows.length ? rows.map((s) => el('tr', { dataset: { service: s.service } },
      el('th', { scope: 'row' }, el('a', { href: `#/service/${encodeURIComponent(s.service)}`, text: s.service })),
      el('td', { class: 'num' }, s.healthy ? badge(num(s.healthy), 'HEALTHY') : '0'),
      el('td', { class: 'num' }, s.suspect ? badge(num(s.suspect), 'SUSPECT') : '0')))
      : [el('tr', {}, el('td', { colspan: '3', class: 'empty', text: this.data.length ? 'No service matches.' : 'No services registered.' }))]));
  }
}

class ServiceView {
  constructor(name) { this.name = name; }

  mount(main) {
    this.instances = new Map();
    this.sorted = null; // ids sorted, rebuilt when the set changes
    this.page = 0;
    this.canWrite = false;
    this.frame = 0;
    this.filtered = [];
    this.shownIds = new Set();
    this.shownList = [];
    this.drawn = false;
    this.listDirty = true;
    this.rowsDirty = true;
    this.stateSel = el('select', { id: 'state-filter', on: { change: () => { this.page = 0; this.refresh(); } } },
      el('option', { value: '', text: 'all' }), el('option', { value: 'HEALTHY', text: 'HEALTHY' }), el('option', { value: 'SUSPECT', text: 'SUSPECT' }));
    this.metaInput = el('input', { type: 'search', id: 'meta-filter', placeholder: 'key=value or text', on: { input: () => { this.page = 0; this.refresh(); } } });
    this.status = el('span', { class: 'status', role: 'status', id: 'stream-status', text: 'connecting…' });
    this.tbody = el('tbody');
    this.counts = el('p', { class: 'muted', id: 'counts' });
    this.prev = el('button', { type: 'button', text: '← Previous', on: { click: () => { this.page--; this.rowsDirty = true; this.schedule(); } } });
    this.next = el('button', { type: 'button', text: 'Next →', on: { click: () => { this.page++; this.rowsDirty = true; this.schedule(); } } });
    this.pageLabel = el('span', { class: 'muted' });
    this.tbody.addEventListener('click', (e) => this.onClick(e));
    main.replaceChildren(
      el('h1', { tabindex: '-1' }, 'Service ', el('span', { class: 'mono', id: 'service-name', text: this.name })),
      el('div', { class: 'toolbar' }, el('label', {}, 'State', this.stateSel), el('label', {}, 'Metadata', this.metaInput), this.status),
      this.counts,
      el('section', { class: 'card' }, el('div', { class: 'table-wrap' }, el('table', { id: 'instances', class: 'instances' },
        el('caption', { text: 'Instances, sorted by id. Last beats are re-read every few seconds (a beat is no event); their ages tick every second.' }),
        el('thead', {}, el('tr', {},
          el('th', { scope: 'col', text: 'Id' }), el('th', { scope: 'col', text: 'Address' }), el('th', { scope: 'col', text: 'State' }),
          el('th', { scope: 'col', class: 'num opt', text: 'Incarnation' }), el('th', { scope: 'col', text: 'Last beat' }),
          el('th', { scope: 'col', class: 'opt', text: 'Interval / suspect / TTL' }), el('th', { scope: 'col', class: 'opt', text: 'Metadata' }),
          el('th', { scope: 'col' }, el('span', { class: 'muted', text: 'Action' })))),
        this.tbody)),
      el('nav', { class: 'pager', 'aria-label': 'Pages' }, this.prev, this.pageLabel, this.next)));
    const table = main.querySelector('#instances');
    whoami(this.name).then((w) => { this.canWrite = !!w.service_write; table.dataset.canWrite = String(this.canWrite); this.refresh(); },
      () => { this.canWrite = false; table.dataset.canWrite = 'false'; this.refresh(); });
    this.stream = new EventStream(`/ui/api/events?service=${encodeURIComponent(this.name)}`, {
      onMessage: (m) => this.apply(m),
      onState: (state, msg) => {
        if (state === 'live') this.inReset = false; // a new connection starts with a new reset
        this.status.textContent = state === 'live' ? 'live' : msg;
        this.status.dataset.state = state;
      },
    }).start();
    this.ticker = setInterval(() => this.tickAges(), 1000);
    this.alive = true;
    this.beatTimer = setTimeout(() => this.refreshBeats(), BEATS_EVERY_MS);
  }

  // refreshBeats reads the last beats from this node's replica: a beat is
  // no event, so the stream alone would let the ages grow. Membership and
  // states stay the stream's.
  async refreshBeats() {
    try {
      // A large service comes in pages (each at most 3 MiB).
      let token = '';
      do {
        const page = token ? `&page_token=${encodeURIComponent(token)}` : '';
        const r = await api('GET', `/v1/services/${encodeURIComponent(this.name)}?include_suspect=true&consistency=CONSISTENCY_STALE${page}`);
        for (const fresh of r.instances || []) {
          const inst = this.instances.get(fresh.id);
          if (inst && inst.incarnation === fresh.incarnation && fresh.last_beat_at) inst.last_beat_at = fresh.last_beat_at;
        }
        token = r.next_page_token || '';
      } while (token && this.alive);
      this.rowsDirty = true;
      this.schedule();
    } catch { /* the stream's status shows trouble */ }
    if (this.alive) this.beatTimer = setTimeout(() => this.refreshBeats(), this.instances.size > 2000 ? 5 * BEATS_EVERY_MS : BEATS_EVERY_MS);
  }

  unmount() {
    this.alive = false;
    clearTimeout(this.beatTimer);
    this.stream.stop();
    clearInterval(this.ticker);
    cancelAnimationFrame(this.frame);
  }

  // apply takes one Watch message. The work per message is O(its
  // changes): the filtered list and the counts are recomputed (O(n)) only
  // when a change can alter them, the rows only when one shown changed.
  apply(m) {
    // A reset replaces the view: its first message has is_reset, and its
    // instances continue in the following messages while more is set.
    if (m.is_reset) this.instances = new Map();
    if (m.is_reset || this.inReset) {
      for (const inst of m.instances || []) this.put(inst);
      this.inReset = !!m.more;
      this.sorted = null;
      this.listDirty = true;
    }
    const filtering = !!(this.stateSel.value || this.metaInput.value.trim());
    for (const ev of m.events || []) {
      const inst = ev.instance;
      if (!inst || inst.service !== this.name) continue;
      const t = eventType(ev.type);
      const old = this.instances.get(inst.id);
      if (t === 'DEREGISTERED' || t === 'EXPIRED') {
        if (old) { this.instances.delete(inst.id); this.sorted = null; this.listDirty = true; }
      } else {
        this.put(inst);
        if (!old) { this.sorted = null; this.listDirty = true; } else if (old._state !== inst._state || filtering) this.listDirty = true;
      }
      if (this.shownIds.has(inst.id)) this.rowsDirty = true;
    }
    this.schedule();
  }

  put(inst) {
    inst._state = instanceState(inst.state);
    this.instances.set(inst.id, inst);
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.render(); });
  }

  // refresh redraws everything: the filter, the page or the permissions changed.
  refresh() { this.listDirty = true; this.rowsDirty = true; this.schedule(); }

  matches(inst) {
    const st = this.stateSel.value;
    if (st && inst._state !== st) return false;
    const q = this.metaInput.value.trim();
    if (!q) return true;
    const md = inst.metadata || {};
    const eq = q.indexOf('=');
    if (eq > 0) {
      const k = q.slice(0, eq).trim();
      const v = q.slice(eq + 1).trim();
      return Object.prototype.hasOwnProperty.call(md, k) && (v === '' || md[k] === v);
    }
    const lq = q.toLowerCase();
    return Object.entries(md).some(([k, v]) => k.toLowerCase().includes(lq) || v.toLowerCase().includes(lq));
  }

  render() {
    if (this.listDirty) {
      this.listDirty = false;
      if (!this.sorted) this.sorted = [...this.instances.keys()].sort();
      const filtered = [];
      let healthy = 0;
      let suspect = 0;
      for (const id of this.sorted) {
        const inst = this.instances.get(id);
        if (!inst) continue;
        if (inst._state === 'SUSPECT') suspect++; else healthy++;
        if (this.matches(inst)) filtered.push(id);
      }
      this.filtered = filtered;
      this.counts.textContent = `${num(this.instances.size)} ${this.instances.size === 1 ? 'instance' : 'instances'}: ${num(healthy)} healthy, ${num(suspect)} suspect; ${num(filtered.length)} shown by the filter.`;
    }
    const filtered = this.filtered;
    const pages = Math.max(1, Math.ceil(filtered.length / PAGE_SIZE));
    this.page = Math.min(Math.max(0, this.page), pages - 1);
    const shown = filtered.slice(this.page * PAGE_SIZE, (this.page + 1) * PAGE_SIZE);
    // The rows are redrawn only when a shown instance changed or the page
    // holds other instances now.
    const same = shown.length === this.shownList.length && shown.every((id, i) => id === this.shownList[i]);
    if (same && !this.rowsDirty && this.drawn) return;
    this.rowsDirty = false;
    this.drawn = true;
    this.shownList = shown;
    this.shownIds = new Set(shown);
    this.pageLabel.textContent = `page ${this.page + 1} of ${pages}`;
    this.prev.disabled = this.page === 0;
    this.next.disabled = this.page >= pages - 1;
    const frag = document.createDocumentFragment();
    for (const id of shown) frag.append(this.row(this.instances.get(id)));
    if (!shown.length) frag.append(el('tr', {}, el('td', { colspan: '8', class: 'empty', text: this.instances.size ? 'No instance matches the filter.' : 'No instances.' })));
    this.tbody.replaceChildren(frag);
  }

  row(inst) {
    const state = inst._state;
    const md = Object.entries(inst.metadata || {}).map(([k, v]) => `${k}=${v}`).join(' ');
    return el('tr', { dataset: { id: inst.id, state } },
      el('th', { scope: 'row', class: 'mono', text: inst.id }),
      el('td', { class: 'mono', text: inst.address }),
      el('td', { class: 'state' }, badge(state)),
      el('td', { class: 'num opt', text: num(inst.incarnation || 1) }),
      el('td', { class: 'age', dataset: { t: inst.last_beat_at || '' }, text: fmtAge(inst.last_beat_at) }),
      el('td', { class: 'opt', text: `${fmtDuration(seconds(inst.beat_interval))} / ${fmtDuration(seconds(inst.suspect_after))} / ${fmtDuration(seconds(inst.ttl))}` }),
      el('td', { class: 'meta opt', text: md }),
      el('td', {}, this.canWrite ? el('button', {
        type: 'button', class: 'danger deregister', text: 'Deregister',
        'aria-label': `Deregister ${inst.id}`, dataset: { id: inst.id, incarnation: String(inst.incarnation || 0) },
      }) : null));
  }

  tickAges() {
    for (const td of this.tbody.querySelectorAll('td.age')) td.textContent = fmtAge(td.dataset.t);
  }

  async onClick(e) {
    const b = e.target.closest('button.deregister');
    if (!b) return;
    if (!b.hasAttribute('data-armed')) {
      b.setAttribute('data-armed', '');
      b.textContent = 'Confirm';
      setTimeout(() => { if (b.isConnected) { b.removeAttribute('data-armed'); b.textContent = 'Deregister'; } }, 5000);
      return;
    }
    b.disabled = true;
    const id = b.dataset.id;
    try {
      await api('DELETE', `/v1/services/${encodeURIComponent(this.name)}/instances/${encodeURIComponent(id)}?incarnation=${encodeURIComponent(b.dataset.incarnation)}`);
      notice(`Deregistered ${id}.`, true);
    } catch (err) {
      b.disabled = false;
      notice(explain(err));
    }
  }
}

class EventsView {
  mount(main) {
    this.items = []; // newest first, at most FEED_CAP
    this.pending = [];
    this.paused = false;
    this.held = 0;
    this.frame = 0;
    this.dirtyAll = true;
    this.svcInput = el('input', { type: 'search', id: 'event-service', placeholder: 'service contains…', on: { input: () => this.refilter() } });
    this.typeSel = el('select', { id: 'event-type', on: { change: () => this.refilter() } },
      ['', 'REGISTERED', 'UPDATED', 'SUSPECT', 'REACQUIRED', 'EXPIRED', 'DEREGISTERED'].map((t) => el('option', { value: t, text: t || 'all' })));
    this.pauseBtn = el('button', { type: 'button', id: 'pause', 'aria-pressed': 'false', text: 'Pause', on: { click: () => this.togglePause() } });
    this.status = el('span', { class: 'status', role: 'status', id: 'stream-status', text: 'connecting…' });
    this.list = el('ol', { class: 'feed', id: 'feed', 'aria-live': 'off' });
    main.replaceChildren(el('h1', { tabindex: '-1', text: 'Events' }),
      el('div', { class: 'toolbar' }, el('label', {}, 'Service', this.svcInput), el('label', {}, 'Type', this.typeSel), this.pauseBtn, this.status),
      el('section', { class: 'card' }, el('p', { class: 'muted', text: `Newest first; the last ${FEED_CAP} events are kept.` }), this.list));
    // Start a little back in the node's history (it replays what it
    // still keeps), and resume after the last index on a reconnect.
    this.after = 0;
    this.stream = new EventStream(() => `/ui/api/events?events_only=true&after_index=${this.after}`, {
      onMessage: (m) => { if (m.index) this.after = Number(m.index); this.take(m); },
      onState: (state, msg) => { this.status.textContent = state === 'live' ? this.statusText() : msg; this.status.dataset.state = state; },
    });
    api('GET', '/v1/services?consistency=CONSISTENCY_STALE').then(
      (r) => { this.after = Math.max(1, Number(r.index) - HISTORY_BACK); }, // 0 would start with a reset
      () => { this.after = 0; },
    ).finally(() => { if (!this.stopped) this.stream.start(); });
    this.schedule();
  }

  unmount() { this.stopped = true; this.stream.stop(); cancelAnimationFrame(this.frame); }

  statusText() { return this.paused ? `paused, ${num(this.held)} new events held` : 'live'; }

  take(m) {
    // A reset after the first means events were skipped (the page fell
    // behind the node's history): the feed says so, never a silent gap.
    if (m.is_reset && !m.more && this.started) this.pending.push({ gap: true, index: m.index });
    if (m.is_reset) this.started = true;
    for (const ev of m.events || []) {
      this.pending.push(ev);
      if (this.pending.length > FEED_CAP) this.pending.shift();
    }
    if (this.paused) {
      this.held = this.pending.length;
      this.status.textContent = this.statusText();
      return;
    }
    this.schedule();
  }

  togglePause() {
    this.paused = !this.paused;
    this.pauseBtn.setAttribute('aria-pressed', String(this.paused));
    this.pauseBtn.textContent = this.paused ? 'Resume' : 'Pause';
    this.held = this.pending.length;
    this.status.textContent = this.statusText();
    if (!this.paused) this.schedule();
  }

  refilter() { this.dirtyAll = true; this.schedule(); }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.render(); });
  }

  matches(ev) {
    if (ev.gap) return true;
    const t = this.typeSel.value;
    if (t && eventType(ev.type) !== t) return false;
    const q = this.svcInput.value.trim().toLowerCase();
    return !q || ((ev.instance && ev.instance.service) || '').toLowerCase().includes(q);
  }

  item(ev) {
    if (ev.gap) {
      return el('li', { class: 'gap', dataset: { type: 'GAP' } },
        el('span', { class: 'when', text: fmtTime() }), el('span', {}, badge('GAP', 'warn')),
        el('span', { class: 'where muted', text: 'The page fell behind the node\'s history: events before this were skipped; the feed resumes from the current state.' }),
        el('span', { class: 'idx muted mono', text: `#${ev.index}` }));
    }
    const inst = ev.instance || {};
    const t = eventType(ev.type);
    const extra = ev.since_last_beat ? ` · ${fmtDuration(seconds(ev.since_last_beat))} since its last beat` : '';
    return el('li', { dataset: { type: t, service: inst.service || '' } },
      el('time', { class: 'when', datetime: ev.at || '', text: fmtTime(ev.at) }),
      el('span', {}, badge(t)),
      el('span', { class: 'where' }, el('a', { href: `#/service/${encodeURIComponent(inst.service || '')}`, text: inst.service || '' }),
        ` / ${inst.id || ''}`, el('span', { class: 'muted', text: ` ${inst.address || ''}${extra}` })),
      el('span', { class: 'idx muted mono', text: `#${ev.index}` }));
  }

  render() {
    if (!this.paused && this.pending.length) {
      const fresh = this.pending.reverse();
      this.pending = [];
      this.held = 0;
      this.items = fresh.concat(this.items).slice(0, FEED_CAP);
      if (!this.dirtyAll) {
        const frag = document.createDocumentFragment();
        for (const ev of fresh.slice(0, FEED_CAP)) if (this.matches(ev)) frag.append(this.item(ev));
        this.list.prepend(frag);
        while (this.list.childElementCount > FEED_CAP) this.list.lastElementChild.remove();
      }
    }
    if (this.dirtyAll) {
      this.dirtyAll = false;
      const frag = document.createDocumentFragment();
      for (const ev of this.items) if (this.matches(ev)) frag.append(this.item(ev));
      this.list.replaceChildren(frag);
    }
    const empty = this.list.childElementCount === 0;
    if (empty) this.list.replaceChildren(el('li', { class: 'empty', text: 'No events yet.' }));
    else {
      const e = this.list.querySelector('li.empty');
      if (e) e.remove();
    }
  }
}

// ---------- routing and token ----------

let current = null;

function route() {
  const hash = location.hash || '#/';
  let view;
  let name = 'overview';
  const m = hash.match(/^#\/service\/(.+)$/);
  if (m) { view = new ServiceView(decodeURIComponent(m[1])); name = 'services'; }
  else if (hash === '#/services') { view = new ServicesView(); name = 'services'; }
  else if (hash === '#/events') { view = new EventsView(); name = 'events'; }
  else view = new OverviewView();
  if (current) current.unmount();
  current = view;
  document.getElementById('notice').hidden = true;
  for (const a of document.querySelectorAll('nav a[data-route]')) {
    if (a.dataset.route === name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const main = document.getElementById('main');
  view.mount(main);
  const h1 = main.querySelector('h1');
  if (h1 && document.activeElement && document.activeElement.closest && document.activeElement.closest('nav')) h1.focus();
}

async function showTokenState() {
  const s = document.getElementById('token-state');
  try {
    const w = await whoami();
    s.textContent = w.acl_enabled ? `ACLs on · token ${w.accessor_id.slice(0, 8)}…` : 'ACLs off';
    document.getElementById('token-input').placeholder = token() ? 'token set (hidden)' : 'ACL secret';
  } catch (err) {
    s.textContent = err instanceof APIError && err.status === 401 ? (token() ? 'token refused' : 'ACLs on · no token') : '';
  }
}

function setupToken() {
  const form = document.getElementById('token-form');
  const input = document.getElementById('token-input');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const v = input.value.trim();
    if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY);
    input.value = '';
    showTokenState();
    route();
  });
  document.getElementById('token-forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    input.value = '';
    showTokenState();
    route();
  });
  input.placeholder = token() ? 'token set (hidden)' : 'ACL secret';
}

window.addEventListener('hashchange', route);
setupToken();
showTokenState();
route();
