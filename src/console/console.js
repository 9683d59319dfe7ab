// The koostatus console: signs in with an API token (kept in this
// variable only), draws the statistics of a channel, follows its live
// changes and finds messages. Talks to the read API of this origin.
'use strict';

let token = null;
let stream = null;
// A statistics reload already due (live changes ask for one at most every 5 s).
let reload = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// A read API call; throws an Error carrying the API's sentence.
async function api(path, options = {}) {
  const response = await fetch('/api/v1' + path, {
    ...options,
    headers: { authorization: 'Bearer ' + token, ...(options.headers ?? {}) },
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(body?.message ?? `The service answered ${response.status}.`);
    error.status = response.status;
    throw error;
  }
  return body;
}

async function signIn(event) {
  event.preventDefault();
  token = $('token').value.trim();
  $('sign-in-error').textContent = '';
  try {
    const { channels } = await api('/channels');
    if (channels.length === 0) throw new Error('This token may read no channel.');
    $('channel').replaceChildren(
      ...channels.map((c) => el('option', { value: c.id }, c.name ? `${c.name} (${c.id})` : c.id)));
    $('token').value = '';
    $('sign-in').hidden = true;
    $('console').hidden = false;
    $('channel-form').hidden = false;
    showChannel();
    $('channel').focus();
  } catch (e) {
    token = null;
    $('sign-in-error').textContent = e.status === 401
      ? 'That token is not valid. Check it, or create one with koostatus token create.'
      : e.message;
  }
}

function signOut() {
  token = null;
  stream?.close();
  stream = null;
  $('console').hidden = true;
  $('channel-form').hidden = true;
  $('sign-in').hidden = false;
  $('live').replaceChildren();
  $('results').replaceChildren();
  $('failed').replaceChildren();
  $('unreported').replaceChildren();
  $('token').focus();
}

function showChannel() {
  showRange();
  follow();
  $('results').replaceChildren();
}

// Everything that depends on the range and the tag: statistics and lists.
function showRange() {
  loadStats();
  loadList('failed');
  loadList('unreported');
}

const RANGES = {
  '24h': { days: 1, bucket: 'hour' },
  '7d': { days: 7, bucket: 'day' },
  '30d': { days: 30, bucket: 'day' },
  '90d': { days: 90, bucket: 'day' },
};

const pad = (n) => String(n).padStart(2, '0');
// A date input's value (local time).
const localDay = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;

// The range shown: a preset ends now; a custom one runs from the start of
// its first day to the end of its last (local time), by hour up to two
// days. Throws a sentence when the custom dates make no range.
function range() {
  const preset = RANGES[$('range').value];
  if (preset) {
    const to = new Date();
    return { from: new Date(to.getTime() - preset.days * 86400000), to, bucket: preset.bucket, open: true };
  }
  const from = new Date(`${$('from').value}T00:00`);
  const to = new Date(`${$('to').value}T00:00`);
  to.setDate(to.getDate() + 1);
  if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime())) throw new Error('Choose both dates of the range.');
  if (from >= to) throw new Error('The range must start on or before the day it ends.');
  return { from, to, bucket: to - from <= 2 * 86400000 ? 'hour' : 'day', open: false };
}

// The range as the listing's and the export's filters: a preset is open
// at its end (the file says `now`).
function rangeQuery(r) {
  return `&updated_after=${encodeURIComponent(r.from.toISOString())}`
    + (r.open ? '' : `&updated_before=${encodeURIComponent(r.to.toISOString())}`);
}

// Shows the custom dates (filled with the last 7 days the first time).
function chooseRange() {
  const custom = $('range').value === 'custom';
  $('custom-range').hidden = !custom;
  if (custom && !$('from').value) {
    const today = new Date();
    $('to').value = localDay(today);
    $('from').value = localDay(new Date(today.getTime() - 6 * 86400000));
  }
  showRange();
  if (custom) $('from').focus();
}

// `&tag=...` when the tag field holds one.
function tagQuery() {
  const tag = $('tag').value.trim();
  return tag ? `&tag=${encodeURIComponent(tag)}` : '';
}

// The messages of the channel, range and tag shown, as a CSV download: the
// export needs the token, which a plain link cannot send, so the file is
// fetched and handed to the browser as a blob.
async function exportCsv() {
  const channel = $('channel').value;
  try {
    const response = await fetch(`/api/v1/channels/${encodeURIComponent(channel)}/export?format=csv`
      + `${rangeQuery(range())}${tagQuery()}`,
    { headers: { authorization: 'Bearer ' + token } });
    if (!response.ok) throw new Error((await response.json().catch(() => null))?.message ?? `The service answered ${response.status}.`);
    const name = /filename="([^"]+)"/.exec(response.headers.get('content-disposition') ?? '')?.[1] ?? 'koostatus.csv';
    const link = el('a', { href: URL.createObjectURL(await response.blob()), download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (e) {
    $('totals').prepend(el('p', { class: 'error', role: 'alert' }, e.message));
  }
}

// The failed or unreported messages of the channel, range and tag, newest
// change first, a page at a time; `more` appends the next page.
const cursors = {};
async function loadList(status, more = false) {
  const mine = ++latest[status];
  const list = $(status);
  const channel = encodeURIComponent($('channel').value);
  const cursor = more && cursors[status] ? `&cursor=${encodeURIComponent(cursors[status])}` : '';
  try {
    const page = await api(`/channels/${channel}/messages?status=${status}&limit=20`
      + `${rangeQuery(range())}${tagQuery()}${cursor}`);
    if (mine !== latest[status]) return;
    const items = page.messages.map((m) => el('li', {},
      el('button', { type: 'button', class: 'link', 'data-message': m.message_id }, m.message_id), ' ',
      status === 'failed'
        ? `to ${m.user_number}, failed ${new Date(m.updated_at).toLocaleString()}`
        : `to ${m.user_number}, sent ${new Date(m.sent_at ?? m.first_seen_at).toLocaleString()}`,
      m.tags.length ? ` (${m.tags.join(', ')})` : ''));
    if (more) list.append(...items);
    else list.replaceChildren(...items);
    if (!more && items.length === 0) list.replaceChildren(el('li', { class: 'hint' }, 'None in this range.'));
    cursors[status] = page.next_cursor;
    $(`${status}-more`).hidden = !page.next_cursor;
  } catch (e) {
    if (mine !== latest[status]) return;
    list.replaceChildren(el('li', { class: 'error' }, e.message));
    $(`${status}-more`).hidden = true;
  }
}

const percent = (r) => `${(r * 100).toFixed(1)} %`;
// Percentiles come from a histogram whose first bin holds everything under
// a second, answered as its middle (0.5 s): show what is known, not 0.5 s.
function duration(seconds) {
  if (seconds < 1) return 'under 1 s';
  if (seconds < 90) return `${seconds.toFixed(1)} s`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// Each load is numbered: answers can arrive out of order (a range or tag
// changed while a request was out), and only the latest may be drawn.
const latest = { stats: 0, failed: 0, unreported: 0 };

async function loadStats() {
  const mine = ++latest.stats;
  const channel = $('channel').value;
  try {
    const { from, to, bucket } = range();
    const stats = await api(`/channels/${encodeURIComponent(channel)}/stats?bucket=${bucket}`
      + `&from=${from.toISOString()}&to=${to.toISOString()}${tagQuery()}`);
    if (mine !== latest.stats) return;
    drawTotals(stats.total);
    drawChart(stats.buckets, bucket);
  } catch (e) {
    if (mine !== latest.stats) return;
    $('totals').replaceChildren(el('p', { class: 'error' }, e.message));
    $('chart').replaceChildren();
  }
}

function drawTotals(t) {
  const ttr = t.time_to_read_seconds;
  const ttd = t.time_to_deliver_seconds;
  const cells = [
    ['Messages', String(t.messages)],
    ['Delivered', percent(t.delivered_rate)],
    ['Read', percent(t.read_rate)],
    ['Failed', percent(t.failed_rate)],
    ['Unreported', `${t.unreported} (${percent(t.unreported_rate)})`],
    ['Sent, waiting', String(t.sent)],
    ['Time to deliver, median', ttd ? duration(ttd.p50) : '–'],
    ['Time to read, median', ttr ? duration(ttr.p50) : '–'],
    ['Time to read, p90', ttr ? duration(ttr.p90) : '–'],
  ];
  $('totals').replaceChildren(...cells.map(([k, v]) => el('div', {}, el('span', {}, k), el('strong', {}, v))));
}

// Stacked bars of messages by current status per bucket, and the read rate
// as a line on its own 0-100 % scale.
function drawChart(buckets, unit) {
  const width = 960, height = 260, left = 44, right = 44, top = 12, bottom = 28;
  const plotW = width - left - right, plotH = height - top - bottom;
  // Even, so that the middle grid line is a whole number of messages.
  const max = 2 * Math.ceil(Math.max(1, ...buckets.map((b) => b.messages)) / 2);
  const step = plotW / Math.max(1, buckets.length);
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `Messages per ${unit}, by status, and the read rate` });
  for (const f of [0, 0.5, 1]) {
    const y = top + plotH * (1 - f);
    chart.append(svg('line', { x1: left, x2: width - right, y1: y, y2: y, class: 'grid' }));
    const label = svg('text', { x: left - 6, y: y + 4, 'text-anchor': 'end', class: 'axis' });
    label.textContent = String(Math.round(max * f));
    chart.append(label);
    const rate = svg('text', { x: width - right + 6, y: y + 4, class: 'axis' });
    rate.textContent = `${f * 100} %`;
    chart.append(rate);
  }
  const points = [];
  buckets.forEach((b, i) => {
    const x = left + i * step + step * 0.15, w = Math.max(1, step * 0.7);
    let y = top + plotH;
    for (const status of ['read', 'delivered', 'failed', 'unreported', 'sent']) {
      const h = (b[status] / max) * plotH;
      if (h > 0) {
        y -= h;
        const bar = svg('rect', { x, y, width: w, height: h, class: status });
        const title = svg('title');
        title.textContent = `${b.start}: ${b[status]} ${status}`;
        bar.append(title);
        chart.append(bar);
      }
    }
    if (b.messages > 0) points.push(`${x + w / 2},${top + plotH * (1 - b.read_rate)}`);
    const every = Math.ceil(buckets.length / 8);
    if (i % every === 0) {
      const label = svg('text', { x: x + w / 2, y: height - 8, 'text-anchor': 'middle', class: 'axis' });
      const d = new Date(b.start);
      label.textContent = unit === 'hour' ? `${d.getUTCHours()}:00` : `${d.getUTCMonth() + 1}/${d.getUTCDate()}`;
      chart.append(label);
    }
  });
  if (points.length > 1) chart.append(svg('polyline', { points: points.join(' '), class: 'rate' }));
  $('chart').replaceChildren(chart);
}

// Live changes through EventSource, which cannot send Authorization: a
// ticket from POST /tickets opens the stream.
async function follow(keep = false) {
  stream?.close();
  stream = null;
  if (!keep) $('live').replaceChildren();
  const channel = $('channel').value;
  try {
    const { ticket } = await api('/tickets', { method: 'POST' });
    stream = new EventSource(`/api/v1/channels/${encodeURIComponent(channel)}/events?ticket=${encodeURIComponent(ticket)}`);
    stream.onopen = () => { $('live-state').textContent = 'Following new changes.'; };
    stream.onerror = () => {
      $('live-state').textContent = 'Reconnecting…';
      // Refused for good (the ticket expired): a new ticket, same list.
      const closed = stream;
      if (closed.readyState === EventSource.CLOSED) {
        setTimeout(() => { if (token && stream === closed) follow(true); }, 2000);
      }
    };
    stream.addEventListener('change', (event) => {
      const c = JSON.parse(event.data);
      const item = el('li', {},
        el('time', { datetime: c.changed_at }, new Date(c.changed_at).toLocaleTimeString()),
        ' ', el('span', { class: `status ${c.status}` }, c.status), ' ',
        el('button', { type: 'button', class: 'link', 'data-message': c.message_id }, c.message_id),
        ` to ${c.user_number}`);
      $('live').prepend(item);
      while ($('live').children.length > 50) $('live').lastChild.remove();
      reload ??= setTimeout(() => { reload = null; if (token) loadStats(); }, 5000);
    });
  } catch (e) {
    $('live-state').textContent = e.message;
  }
}

async function search(event) {
  event?.preventDefault();
  const channel = encodeURIComponent($('channel').value);
  const value = $('search-value').value.trim();
  $('search-error').textContent = '';
  $('results').replaceChildren();
  try {
    if ($('search-kind').value === 'message') {
      showMessage(await api(`/channels/${channel}/messages/${encodeURIComponent(value)}`));
    } else {
      const page = await api(`/channels/${channel}/messages?user_number=${encodeURIComponent(value)}&limit=50`);
      if (page.messages.length === 0) throw new Error(`No message to ${value}.`);
      $('results').replaceChildren(el('ul', { class: 'found' }, ...page.messages.map((m) => el('li', {},
        el('button', { type: 'button', class: 'link', 'data-message': m.message_id }, m.message_id), ' ',
        el('span', { class: `status ${m.status}` }, m.status), ` since ${new Date(m.updated_at).toLocaleString()}`))));
    }
  } catch (e) {
    $('search-error').textContent = e.message;
  }
}

function showMessage(m) {
  const rows = m.history.map((h) => el('tr', {},
    el('td', {}, el('span', { class: `status ${h.status}` }, h.status)),
    el('td', {}, new Date(h.first_received_at).toLocaleString()),
    el('td', {}, String(h.receipt_count)),
    el('td', {}, h.advanced ? 'yes' : 'no')));
  $('results').replaceChildren(
    el('h3', {}, `Message ${m.message_id}`),
    el('p', {}, `To ${m.user_number} from ${m.sender}; now `, el('span', { class: `status ${m.status}` }, m.status),
      m.sent_at ? `; sent ${new Date(m.sent_at).toLocaleString()}` : `; first seen ${new Date(m.first_seen_at).toLocaleString()}`,
      m.tags.length ? `; tags ${m.tags.join(', ')}.` : '.'),
    el('table', { class: 'history' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Status'), el('th', {}, 'First received'),
        el('th', {}, 'Reports'), el('th', {}, 'Moved it forward'))),
      el('tbody', {}, ...rows)));
}

// A message id in the live list or the results opens its history.
function openMessage(event) {
  const id = event.target.closest('[data-message]')?.dataset.message;
  if (!id) return;
  $('search-kind').value = 'message';
  $('search-value').value = id;
  search();
}

document.addEventListener('DOMContentLoaded', () => {
  $('sign-in-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', signOut);
  $('channel').addEventListener('change', showChannel);
  $('range').addEventListener('change', chooseRange);
  $('tag').addEventListener('change', showRange);
  // Enter in the tag field or a date applies it (the form has several
  // fields and no submit button, so the browser would not); the page never
  // navigates away.
  $('channel-form').addEventListener('submit', (event) => event.preventDefault());
  $('channel-form').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && event.target.matches('input')) showRange();
  });
  $('apply-range').addEventListener('click', showRange);
  for (const status of ['failed', 'unreported']) {
    $(`${status}-more`).addEventListener('click', () => loadList(status, true));
    $(status).addEventListener('click', openMessage);
  }
  $('export').addEventListener('click', exportCsv);
  $('search-form').addEventListener('submit', search);
  $('live').addEventListener('click', openMessage);
  $('results').addEventListener('click', openMessage);
  $('token').focus();
});
