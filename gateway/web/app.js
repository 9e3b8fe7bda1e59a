// The operator's page: reads the REST API once, then follows its event stream (docs/web.md).
// Plain DOM, no framework, no build step. Text from the gateway is always set as text, never
// as HTML. Actions send the session token from POST /api/login as a Bearer header (no cookie).
'use strict';
const $ = (id) => document.getElementById(id);
const WINDOW_S = 120, MAX_SAMPLES = 300, MAX_EVENTS = 50;
let token = sessionStorage.getItem('gw-token');
let es = null, pendingLogin = null;
const points = new Map(), devices = new Map();

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}
const time = (ts) => (ts == null ? '–' : new Date(ts * 1000).toLocaleTimeString());
function num(v, type) {
  if (v == null) return '–';
  if (type === 'bool') return v ? 'on' : 'off';
  const a = Math.abs(v);
  return Number.isInteger(v) && a < 1e7 ? String(v) : v.toFixed(a >= 100 ? 1 : a >= 1 ? 2 : 3);
}
function badge(text, cls) { return el('span', { class: 'badge ' + (cls || ''), text }); }
function notice(text, bad) { const n = $('notice'); n.textContent = text; n.className = bad ? 'bad' : ''; }

async function api(method, path, body) {
  const opts = { method, headers: {}, cache: 'no-store' };
  if (token) opts.headers.Authorization = 'Bearer ' + token;
  if (body !== undefined) { opts.headers['Content-Type'] = 'application/json'; opts.body = JSON.stringify(body); }
  const r = await fetch(path, opts);
  let doc = null;
  try { doc = await r.json(); } catch (e) { /* not JSON: the status says it */ }
  if (!r.ok) {
    const err = new Error((doc && doc.error) || `${r.status} ${r.statusText}`);
    err.status = r.status; err.doc = doc; throw err;
  }
  return doc;
}

// -- login: a session token, kept for this tab only --------------------------------------
function setToken(t, who) {
  token = t;
  if (t) sessionStorage.setItem('gw-token', t); else sessionStorage.removeItem('gw-token');
  $('who').textContent = who || 'not logged in';
  $('login-btn').hidden = !!t; $('logout-btn').hidden = !t;
}
function login(why) {
  if (pendingLogin) return pendingLogin.promise;
  $('login-why').textContent = why; $('login-error').textContent = '';
  $('login-password').value = '';
  $('login').showModal(); $('login-user').focus();
  pendingLogin = {};
  pendingLogin.promise = new Promise((ok, no) => { pendingLogin.ok = ok; pendingLogin.no = no; });
  return pendingLogin.promise;
}
$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('login-submit').disabled = true;
  try {
    const doc = await api('POST', '/api/login', { user: $('login-user').value, password: $('login-password').value });
    setToken(doc.token, `${doc.user} (${doc.role})`);
    $('login').close();
    const p = pendingLogin; pendingLogin = null; p.ok();
    if (!es || es.readyState === EventSource.CLOSED) start();
  } catch (e) {
    $('login-error').textContent = e.message;
  } finally { $('login-submit').disabled = false; }
});
function cancelLogin() {
  if ($('login').open) $('login').close();
  if (pendingLogin) { const p = pendingLogin; pendingLogin = null; p.no(new Error('not logged in')); }
}
$('login-cancel').addEventListener('click', cancelLogin);
$('login').addEventListener('cancel', cancelLogin);
$('login-btn').addEventListener('click', () => login('Log in to acknowledge alarms, write setpoints and poll devices.').catch(() => {}));
$('logout-btn').addEventListener('click', async () => {
  try { await api('POST', '/api/logout'); } catch (e) { /* the session is gone either way */ }
  setToken(null); notice('Logged out.');
});

// An action that changes state: log in first (or again, when the session expired).
async function act(what, method, path, body) {
  const why = `${what} needs an operator's login.`;
  if (!token) await login(why);
  try { return await api(method, path, body); } catch (e) {
    if (e.status !== 401) throw e;
    setToken(null); await login(why);
    return api(method, path, body);
  }
}
async function run(what, method, path, body, done) {
  try { const doc = await act(what, method, path, body); notice(done(doc)); return doc; } catch (e) {
    notice(`${what} refused: ${e.message}`, true); return null;
  }
}

// -- points and sparklines -----------------------------------------------------------------
function spark(p) {
  const s = p.samples, line = p.svg.firstChild;
  if (s.length < 2) { line.setAttribute('points', ''); return; }
  const t1 = s[s.length - 1][0], t0 = Math.max(s[0][0], t1 - WINDOW_S);
  let lo = Infinity, hi = -Infinity;
  for (const [t, v] of s) if (t >= t0 && v != null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const span = hi - lo || 1, dt = t1 - t0 || 1, out = [];
  for (const [t, v] of s) if (t >= t0 && v != null) out.push(`${((t - t0) / dt * 100).toFixed(1)},${(22 - (v - lo) / span * 20).toFixed(1)}`);
  line.setAttribute('points', out.join(' '));
  p.svg.setAttribute('aria-label', `trend of ${p.name}, ${num(lo, p.type)} to ${num(hi, p.type)}`);
}
function addPoint(doc) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', 'spark'); svg.setAttribute('viewBox', '0 0 100 24');
  svg.setAttribute('preserveAspectRatio', 'none'); svg.setAttribute('role', 'img');
  svg.append(document.createElementNS('http://www.w3.org/2000/svg', 'polyline'));
  const p = { name: doc.name, type: doc.type, samples: (doc.samples || []).slice(), svg,
    value: el('td', { class: 'num value' }), quality: el('td'), ts: el('td') };
  const name = el('th', { scope: 'row', text: doc.name });
  if (doc.description) name.title = doc.description;
  $('point-rows').append(el('tr', { id: 'pt-' + doc.name }, name, p.value, el('td', { text: doc.unit || '' }), el('td', {}, svg), p.quality, p.ts));
  points.set(doc.name, p);
  update(p, doc, false);
}
function update(p, doc, append) {
  p.value.textContent = num(doc.value, p.type);
  p.quality.replaceChildren(badge(doc.quality, doc.quality === 'good' ? 'ok' : 'bad'));
  p.ts.textContent = time(doc.ts);
  if (append && doc.ts != null && doc.value != null) {
    p.samples.push([doc.ts, doc.value]);
    if (p.samples.length > MAX_SAMPLES) p.samples.splice(0, p.samples.length - MAX_SAMPLES);
  }
  spark(p);
}

// -- alarms, devices, rules, uplink -----------------------------------------------------------
const ALARM_TEXT = { active_unacked: 'active, not acknowledged', active_acked: 'active, acknowledged', cleared_unacked: 'cleared, not acknowledged' };
function showAlarms(list) {
  const rows = list.filter((a) => a.state !== 'normal').map((a) => {
    const cell = a.acked ? el('td', { text: `by ${a.acked_by || '?'} at ${time(a.acked_ts)}` })
      : el('td', {}, el('button', { type: 'button', 'aria-label': `Acknowledge ${a.rule}`, 'data-rule': a.rule, text: 'Acknowledge', onclick: () => ack(a.rule) }));
    return el('tr', { 'data-rule': a.rule }, el('th', { scope: 'row', text: a.rule }),
      el('td', {}, badge(a.severity, a.severity === 'minor' ? 'warn' : 'bad')),
      el('td', {}, badge(ALARM_TEXT[a.state] || a.state, a.acked ? 'warn' : 'bad')),
      el('td', { text: a.message }), el('td', { text: time(a.since) }), cell);
  });
  const focused = document.activeElement && document.activeElement.dataset.rule;
  $('alarm-rows').replaceChildren(...rows);
  $('no-alarms').hidden = rows.length > 0;
  if (focused) { const b = $('alarm-rows').querySelector(`button[data-rule="${CSS.escape(focused)}"]`); if (b) b.focus(); }
}
async function ack(rule) {
  const doc = await run(`Acknowledging ${rule}`, 'POST', `/api/alarms/${encodeURIComponent(rule)}/ack`, {},
    (d) => `Alarm ${rule} acknowledged by ${d.alarm ? d.alarm.acked_by : 'you'}.`);
  if (doc) showAlarms(await api('GET', '/api/alarms'));
}
function devState(d) {
  if (d.stalled) return badge('stalled', 'bad');
  return badge(d.state || (d.online ? 'online' : 'offline'), d.online ? 'ok' : 'bad');
}
function showDevices() {
  $('device-rows').replaceChildren(...[...devices.values()].map((d) => el('tr', {},
    el('th', { scope: 'row', text: d.name }), el('td', {}, devState(d)),
    el('td', { class: 'num', text: d.round_trip_s == null ? '–' : `${(d.round_trip_s * 1000).toFixed(1)} ms` }),
    el('td', { text: d.last_error || '' }), el('td', { class: 'num', text: String(d.restarts ?? 0) }))));
}
const RULE_CLS = { active: 'bad', holding: 'warn', cooldown: 'warn', idle: 'ok' };
function showRules(list) {
  $('rule-rows').replaceChildren(...list.map((r) => el('tr', {},
    el('th', { scope: 'row', text: r.name }), el('td', {}, badge(r.state, RULE_CLS[r.state])),
    el('td', { text: r.severity }), el('td', { class: 'num', text: String(r.firings) }),
    el('td', { text: time(r.last_fired) }),
    el('td', {}, el('button', { type: 'button', class: 'secondary', 'aria-label': `${r.enabled ? 'Disable' : 'Enable'} ${r.name}`,
      text: r.enabled ? 'Disable' : 'Enable', onclick: () => toggle(r) })))));
}
async function toggle(r) {
  const verb = r.enabled ? 'disable' : 'enable';
  const doc = await run(`${verb} ${r.name}`, 'POST', `/api/rules/${encodeURIComponent(r.name)}/${verb}`, {},
    () => `Rule ${r.name} ${verb}d until the config is reloaded.`);
  if (doc) showRules(await api('GET', '/api/rules'));
}
function showUplink(u) {
  const dropped = Object.entries(u.dropped || {}).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
  const rows = [['Link', badge(u.link || 'unknown', u.link === 'connected' ? 'ok' : 'bad')],
    ['Queue depth', `${u.queue_depth} records`], ['Queue size', `${(u.queue_bytes / 1024).toFixed(1)} KiB`],
    ['Oldest queued', u.oldest_age_s == null ? '–' : `${u.oldest_age_s.toFixed(1)} s`], ['Dropped', dropped]];
  $('uplink-list').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', {}, v)]));
}
function describe(e) {
  switch (e.kind) {
    case 'alarm': return `alarm ${e.state} ${e.rule}${e.by ? ' by ' + e.by : ''}: ${e.message || ''}`;
    case 'write': return `write ${e.point} = ${e.value} (${e.outcome}) by ${e.user || e.rule}`;
    case 'device': return `device ${e.device} ${e.state}${e.detail ? ': ' + e.detail : ''}`;
    case 'log': return `${e.rule}: ${e.message}`;
    default: return e.message ? `${e.kind} ${e.rule || ''}: ${e.message}`
      : `${e.kind}: ${Object.entries(e).filter(([k, v]) => k !== 'kind' && k !== 'ts' && typeof v !== 'object').map(([k, v]) => `${k}=${v}`).join(' ')}`;
  }
}
function addEvent(e) {
  const list = $('event-list');
  list.prepend(el('li', {}, el('span', { class: 'muted', text: time(e.ts) + ' ' }), describe(e)));
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

// -- write a setpoint, poll once ----------------------------------------------------------
function fillWritable(list) {
  $('write-point').replaceChildren(...list.filter((p) => p.writable).map((p) =>
    el('option', { value: p.name, text: `${p.name}${p.unit ? ' (' + p.unit + ')' : ''}${p.type === 'bool' ? ' on/off' : ''}` })));
}
$('write-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('write-point').value, raw = $('write-value').value.trim().toLowerCase(), p = points.get(name);
  let value;
  if (p && p.type === 'bool') {
    value = { on: true, true: true, 1: true, off: false, false: false, 0: false }[raw];
    if (value === undefined) { notice(`${name} takes on or off (or 1 or 0), not "${raw}".`, true); return; }
  } else {
    value = Number(raw.replace(',', '.'));
    if (raw === '' || !Number.isFinite(value)) { notice(`${name} takes a number, not "${raw}".`, true); return; }
  }
  await run(`Writing ${name}`, 'POST', `/api/points/${encodeURIComponent(name)}/write`, { value },
    () => `${name} = ${raw} written.`);
});
function fillBlocks() {
  const d = devices.get($('poll-device').value);
  $('poll-block').replaceChildren(...(d ? d.blocks : []).map((b) => el('option', { value: b.index,
    text: `${b.index}: ${b.table} ${b.address}–${b.address + b.count - 1} (${b.points.join(', ')})` })));
}
$('poll-device').addEventListener('change', fillBlocks);
$('poll-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('poll-device').value, block = Number($('poll-block').value);
  let doc;
  try { doc = await act(`Polling ${name}`, 'POST', `/api/devices/${encodeURIComponent(name)}/poll`, { block }); } catch (e) {
    $('poll-result').replaceChildren(el('p', { class: 'badge bad', text: `Poll of ${name} block ${block} failed: ${e.message}` }));
    return;
  }
  const b = doc.block, raw = doc.registers || doc.bits;
  const head = (...c) => el('thead', {}, el('tr', {}, ...c.map((t) => el('th', { scope: 'col', text: t }))));
  const regs = el('table', { id: 'poll-raw' }, el('caption', { text: `Raw ${b.table} ${doc.registers ? 'registers' : 'bits'}` }),
    head('Address', 'Decimal', 'Hex'), el('tbody', {}, ...raw.map((v, i) => el('tr', {},
      el('th', { scope: 'row', text: String(b.address + i) }), el('td', { class: 'num', text: String(v) }),
      el('td', { text: '0x' + v.toString(16).toUpperCase().padStart(doc.registers ? 4 : 1, '0') })))));
  const vals = el('table', { id: 'poll-values' }, el('caption', { text: 'Decoded values' }), head('Point', 'Value'),
    el('tbody', {}, ...Object.entries(doc.values).map(([k, v]) => el('tr', {},
      el('th', { scope: 'row', text: k }), el('td', { class: 'num', text: v == null ? '–' : String(+v.toFixed(6)) })))));
  $('poll-result').replaceChildren(el('p', { text: `${name} block ${b.index}, function ${doc.function}, round trip ${(doc.round_trip_s * 1000).toFixed(1)} ms` }), regs, vals);
});

// -- start: read everything once, then follow the event stream ------------------------------
async function start() {
  try {
    const who = await api('GET', '/api/whoami');
    setToken(token, who.user ? `${who.user} (${who.role})` : 'not logged in');
  } catch (e) {
    if (e.status !== 401) { notice(`The gateway does not answer: ${e.message}`, true); setTimeout(start, 5000); return; }
    if (token) { setToken(null); return start(); } // an expired session: try without it

    login('Reading from another host needs a login.').catch(() => notice('Log in to see the plant.', true));
    return;
  }
  const [devs, pts, alarms, rules, up] = await Promise.all(['/api/devices', '/api/points?samples=100',
    '/api/alarms', '/api/rules', '/api/uplink'].map((p) => api('GET', p)));
  devices.clear(); devs.forEach((d) => devices.set(d.name, d)); showDevices();
  $('poll-device').replaceChildren(...devs.filter((d) => d.blocks.length).map((d) => el('option', { value: d.name, text: d.name })));
  fillBlocks();
  points.clear(); $('point-rows').replaceChildren(); pts.forEach(addPoint); fillWritable(pts);
  showAlarms(alarms); showRules(rules); showUplink(up);
  follow();
}
function follow() {
  if (es) es.close();
  es = new EventSource('/api/events' + (token ? '?access_token=' + encodeURIComponent(token) : ''));
  const link = (text, cls) => { $('link').textContent = text; $('link').className = 'badge ' + cls; };
  es.onopen = () => link('live', 'ok');
  es.onerror = () => {
    link('reconnecting', 'warn');
    if (es.readyState === EventSource.CLOSED) setTimeout(start, 3000); // refused: read again first
  };
  const on = (name, fn) => es.addEventListener(name, (e) => fn(JSON.parse(e.data)));
  on('hello', (h) => { $('gw-name').textContent = h.gateway; document.title = `${h.gateway}: gateway`; });
  on('points', (d) => d.points.forEach((doc) => { const p = points.get(doc.name); if (p) update(p, doc, true); }));
  on('alarms', showAlarms);
  on('devices', (d) => { for (const [n, s] of Object.entries(d)) devices.set(n, { ...devices.get(n), ...s }); showDevices(); });
  on('uplink', showUplink);
  on('rules', () => api('GET', '/api/rules').then(showRules, () => {}));
  on('event', addEvent);
}
start();
