// Deliveries of a webhook (status, attempts, next retry, replay from an
// event) and one delivery with every attempt's request and response, and
// Redeliver.

import { api } from './api.js';
import { h, append, field, notice, title, table, when, badge, button } from './dom.js';
import { exchange } from './settings.js';

const STATE_KIND = { succeeded: 'good', pending: 'wait', failed: 'bad', dead: 'bad', folded: '' };

export function stateBadge(state) {
  return badge(state, STATE_KIND[state]);
}

export function deliveryRows(items) {
  return items.map((d) => h('tr', {},
    h('th', { scope: 'row' }, h('a', { href: `#/deliveries/${encodeURIComponent(d.id)}` }, d.id)),
    h('td', {}, d.kind),
    // A test's sample event is not in the log.
    h('td', {}, d.kind === 'test' ? 'sample event'
      : h('a', { href: `#/events/${encodeURIComponent(d.event_id)}` }, d.event_id)),
    h('td', {}, stateBadge(d.state)),
    h('td', {}, String(d.attempts)),
    h('td', {}, d.last_status != null ? String(d.last_status) : (d.last_error ?? '—')),
    h('td', {}, d.state === 'pending' ? when(d.next_attempt_at) : '—'),
    h('td', {}, when(d.created_at))));
}

const HEADINGS = ['Delivery', 'Kind', 'Event', 'State', 'Attempts', 'Last answer', 'Next retry', 'Created'];

export async function deliveriesPage(main, webhookId) {
  const base = `/webhooks/${encodeURIComponent(webhookId)}`;
  const [webhook, page] = await Promise.all([api.get(base), api.get(`${base}/deliveries?limit=50`)]);
  const status = notice();
  const tbody = h('tbody', {}, deliveryRows(page.items));
  let next = page.next;
  const more = button('Older deliveries', async () => {
    try {
      const p = await api.get(`${base}/deliveries?limit=50&before=${encodeURIComponent(next)}`);
      tbody.append(...deliveryRows(p.items));
      next = p.next;
      more.hidden = !next;
    } catch (e) {
      status.error(e.message);
    }
  }, { hidden: !next });

  const since = h('input', { type: 'text', required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'evt_…', class: 'mono' });
  const replayStatus = notice();
  const replayed = h('ul', { class: 'replayed', 'aria-label': 'New deliveries' });
  const replay = h('form', { class: 'card inline', novalidate: true },
    h('h2', {}, 'Replay'),
    field('Replay from event', since, 'New deliveries for this event and every later event of the repository that the webhook wants.'),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Replay')),
    replayStatus.el,
    replayed);
  replay.addEventListener('submit', async (event) => {
    event.preventDefault();
    replayStatus.clear();
    try {
      const r = await api.post(`${base}/replay`, { since: since.value.trim() });
      replayStatus.ok(`Replayed ${r.events} events: ${r.deliveries.length} new deliveries, ${r.filtered} filtered out.`);
      replayed.replaceChildren();
      append(replayed, r.deliveries.map((id) => h('li', {}, h('a', { href: `#/deliveries/${encodeURIComponent(id)}` }, id))));
    } catch (e) {
      replayStatus.error(e.message);
    }
  });

  append(main, 
    title('Deliveries'),
    h('p', {}, 'Of the notification to ', h('code', {}, webhook.url), ' (',
      h('a', { href: `#/repositories/${encodeURIComponent(webhook.repository_id)}` }, 'Repository Settings'), ').'),
    page.items.length
      ? h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, HEADINGS.map((t) => h('th', { scope: 'col' }, t)))), tbody))
      : h('p', { class: 'muted' }, 'No deliveries yet.'),
    more,
    status.el,
    replay);
}

export async function deliveryPage(main, id) {
  renderDelivery(main, await api.get(`/deliveries/${encodeURIComponent(id)}`));
}

function renderDelivery(main, d, message) {
  const id = d.id;
  const status = notice();
  const redeliver = button('Redeliver', async () => {
    status.clear();
    try {
      // The answer is the delivery as it now stands; its attempts so far
      // stay as shown (reload for the new one).
      const now = await api.post(`/deliveries/${encodeURIComponent(id)}/redeliver`);
      main.replaceChildren();
      renderDelivery(main, { ...now, attempt_log: d.attempt_log }, 'Redelivery queued: the sender sends it now.');
    } catch (e) {
      status.error(e.message);
    }
  }, { class: 'primary' });
  const attempts = (d.attempt_log || []).slice().reverse().map((a) => h('section', { class: 'card attempt' },
    h('h2', {}, `Attempt ${a.number} `, a.succeeded ? badge('succeeded', 'good') : badge('failed', 'bad')),
    h('p', { class: 'hint' }, 'Started ', when(a.started_at), a.error ? [' — ', a.error] : null),
    exchange(a)));
  append(main, 
    title('Delivery'),
    h('dl', { class: 'facts card' },
      h('dt', {}, 'Delivery'), h('dd', {}, h('code', {}, d.id)),
      h('dt', {}, 'State'), h('dd', {}, stateBadge(d.state)),
      h('dt', {}, 'Kind'), h('dd', {}, d.kind),
      h('dt', {}, 'Attempts'), h('dd', {}, String(d.attempts)),
      h('dt', {}, 'Next retry'), h('dd', {}, d.state === 'pending' ? when(d.next_attempt_at) : '—'),
      h('dt', {}, 'Last error'), h('dd', {}, d.last_error ?? '—'),
      h('dt', {}, 'Event'), h('dd', {}, d.kind === 'test' ? 'a sample event (Test Webhook)'
        : h('a', { href: `#/events/${encodeURIComponent(d.event_id)}` }, d.event_id)),
      h('dt', {}, 'Webhook'), h('dd', {}, h('a', { href: `#/webhooks/${encodeURIComponent(d.webhook_id)}/deliveries` }, 'Deliveries of this webhook')),
      h('dt', {}, 'Plugin'), h('dd', {}, d.plugin),
      d.folded && d.folded.length ? [h('dt', {}, 'Also carries'), h('dd', {}, d.folded.map((id, i) => [i ? ', ' : null,
        h('a', { href: `#/events/${encodeURIComponent(id)}` }, id)]))] : null,
      d.folded_into ? [h('dt', {}, 'Folded into'), h('dd', {},
        h('a', { href: `#/deliveries/${encodeURIComponent(d.folded_into)}` }, d.folded_into))] : null),
    h('div', { class: 'actions' }, redeliver),
    status.el,
    attempts.length ? attempts : h('p', { class: 'muted' }, 'No attempt yet.'));
  if (message) status.ok(message);
}
