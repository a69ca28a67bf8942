// The event log, with filters; one event with its deliveries and a replay
// from it.

import { api } from './api.js';
import { h, append, field, notice, title, table, when, button } from './dom.js';
import { deliveryRows } from './deliveries.js';

const TYPES = ['image.pushed', 'image.deleted', 'webhook.test'];

function eventRows(items) {
  return items.map((e) => h('tr', {},
    h('td', {}, when(e.occurred_at)),
    h('th', { scope: 'row' }, h('a', { href: `#/events/${encodeURIComponent(e.id)}` }, e.type)),
    h('td', {}, e.repository.name),
    h('td', {}, e.tag != null ? h('code', {}, e.tag) : '—'),
    h('td', {}, e.digest ? h('code', { title: e.digest }, e.digest.slice(0, 19)) : '—'),
    h('td', {}, e.source)));
}

function isoOrEmpty(local) {
  if (!local) return '';
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

export async function eventsPage(main, params) {
  const query = new URLSearchParams();
  for (const key of ['repository', 'type', 'since', 'until']) if (params.get(key)) query.set(key, params.get(key));
  query.set('limit', '50');
  const [page, repos] = await Promise.all([api.get(`/events?${query}`), api.get('/repositories')]);

  const repository = h('select', {}, h('option', { value: '' }, 'All repositories'),
    repos.map((r) => h('option', { value: r.id }, r.name)));
  repository.value = params.get('repository') || '';
  const type = h('select', {}, h('option', { value: '' }, 'All types'), TYPES.map((t) => h('option', { value: t }, t)));
  type.value = params.get('type') || '';
  const since = h('input', { type: 'datetime-local', step: '1' });
  const until = h('input', { type: 'datetime-local', step: '1' });
  const filters = h('form', { class: 'card filters', novalidate: true, 'aria-label': 'Filters' },
    field('Repository', repository), field('Type', type), field('Since', since), field('Until', until),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Filter')));
  filters.addEventListener('submit', (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    if (repository.value) q.set('repository', repository.value);
    if (type.value) q.set('type', type.value);
    if (isoOrEmpty(since.value)) q.set('since', isoOrEmpty(since.value));
    if (isoOrEmpty(until.value)) q.set('until', isoOrEmpty(until.value));
    window.location.hash = `#/events${q.toString() ? `?${q}` : ''}`;
  });

  const status = notice();
  const tbody = h('tbody', {}, eventRows(page.items));
  let next = page.next;
  const more = button('Older events', async () => {
    try {
      query.set('before', next);
      const p = await api.get(`/events?${query}`);
      tbody.append(...eventRows(p.items));
      next = p.next;
      more.hidden = !next;
    } catch (e) {
      status.error(e.message);
    }
  }, { hidden: !next });
  append(main, title('Events'), filters,
    page.items.length
      ? h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['Occurred', 'Type', 'Repository', 'Tag', 'Digest', 'Source'].map((t) => h('th', { scope: 'col' }, t)))),
        tbody))
      : h('p', { class: 'muted' }, 'No events match.'),
    more, status.el);
}

export async function eventPage(main, id) {
  const { deliveries, ...event } = await api.get(`/events/${encodeURIComponent(id)}`);
  const status = notice();
  // The webhooks to replay to are asked for when wanted: the page itself
  // is one round trip.
  const target = h('select', {});
  const choose = h('div', { hidden: true },
    field('Webhook', target, 'New deliveries of this event and every later event of the repository.'),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Replay')));
  const open = button('Replay from this event…', async () => {
    status.clear();
    try {
      const webhooks = await api.get(`/repositories/${encodeURIComponent(event.repository.id)}/webhooks`);
      if (webhooks.length === 0) {
        status.error('The repository has no webhooks.');
        return;
      }
      append(target, webhooks.map((w) => h('option', { value: w.id }, w.url)));
      open.hidden = true;
      choose.hidden = false;
      target.focus();
    } catch (err) {
      status.error(err.message);
    }
  });
  const replay = h('form', { class: 'card inline', novalidate: true },
    h('h2', {}, 'Replay'), open, choose, status.el);
  replay.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.clear();
    try {
      const r = await api.post(`/webhooks/${encodeURIComponent(target.value)}/replay`, { since: event.id });
      status.ok(`Replayed ${r.events} events: ${r.deliveries.length} new deliveries, ${r.filtered} filtered out.`);
    } catch (err) {
      status.error(err.message);
    }
  });
  append(main, 
    title('Event'),
    h('dl', { class: 'facts card' },
      h('dt', {}, 'Type'), h('dd', {}, event.type),
      h('dt', {}, 'Repository'), h('dd', {}, h('a', { href: `#/repositories/${encodeURIComponent(event.repository.id)}` }, event.repository.name)),
      h('dt', {}, 'Tag'), h('dd', { class: 'event-tag' }, event.tag ?? '—'),
      h('dt', {}, 'Digest'), h('dd', {}, h('code', {}, event.digest ?? '—')),
      h('dt', {}, 'Occurred'), h('dd', {}, when(event.occurred_at)),
      h('dt', {}, 'Source'), h('dd', {}, event.source)),
    h('h2', {}, 'As plugins see it'),
    h('pre', { class: 'body', tabindex: '0', 'aria-label': 'Event JSON' }, JSON.stringify(event, null, 2)),
    h('h2', {}, 'Deliveries'),
    deliveries.length
      ? table(['Delivery', 'Kind', 'Event', 'State', 'Attempts', 'Last answer', 'Next retry', 'Created'], deliveryRows(deliveries))
      : h('p', { class: 'muted' }, 'No deliveries.'),
    replay);
}
