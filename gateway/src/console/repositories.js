// Repositories: the list (poll status, last event) and Add repository.

import { api, plugins } from './api.js';
import { h, append, field, notice, title, table, when, badge, button, uid } from './dom.js';
import { webhookFields, shownOnce, handOver } from './settings.js';

function pollStatus(repo) {
  if (repo.kind !== 'remote' || !repo.poll) return h('span', { class: 'muted' }, 'notified by its registry');
  const p = repo.poll;
  if (p.last_error) {
    return h('span', {}, badge('failing', 'bad'), ` ${p.consecutive_errors} in a row: `, p.last_error);
  }
  if (!p.last_poll_at) return badge('not polled yet', 'wait');
  return h('span', {}, badge(p.synced ? 'ok' : 'syncing', 'good'), ' last ', when(p.last_poll_at),
    `, ${p.tags_known} tags`, p.next_poll_at ? [', next ', when(p.next_poll_at)] : null);
}

function lastEvent(event) {
  if (!event) return h('span', { class: 'muted' }, '—');
  return h('span', {}, event.type, ' ', h('code', {}, event.tag ?? event.digest ?? ''), ' ', when(event.occurred_at));
}

export async function repositoriesPage(main) {
  // The latest events give each repository its last one, in the same round trip.
  const [repos, events] = await Promise.all([api.get('/repositories'), api.get('/events?limit=500')]);
  const last = new Map();
  for (const e of events.items) if (!last.has(e.repository.id)) last.set(e.repository.id, e);
  append(main, 
    h('div', { class: 'page-head' }, title('Repositories'),
      h('a', { href: '#/repositories/new', class: 'button primary' }, 'Add repository')),
  );
  if (repos.length === 0) {
    append(main, h('p', {}, 'No repositories yet. A registry that notifies the gateway creates its own; ',
      h('a', { href: '#/repositories/new' }, 'add one'), ' to set its webhooks first, or to poll a remote registry.'));
    return;
  }
  const rows = repos.map((r) => h('tr', {},
    h('th', { scope: 'row' }, h('a', { href: `#/repositories/${encodeURIComponent(r.id)}` }, r.name)),
    h('td', {}, r.kind),
    h('td', {}, r.registry ?? '—'),
    h('td', {}, pollStatus(r)),
    h('td', {}, lastEvent(last.get(r.id)))));
  append(main, table(['Repository', 'Kind', 'Registry', 'Poll status', 'Last event'], rows));
}

export async function addRepositoryPage(main) {
  const installed = await plugins();
  const status = notice();
  const name = h('input', { type: 'text', required: true, autocomplete: 'off', spellcheck: 'false' });
  const kind = h('select', {}, h('option', { value: 'local' }, 'Local (its registry notifies Callisto)'),
    h('option', { value: 'remote' }, 'Remote (Callisto polls it)'));
  const registry = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false' });
  const username = h('input', { type: 'text', autocomplete: 'off' });
  const password = h('input', { type: 'password', autocomplete: 'new-password' });
  const tags = h('input', { type: 'text', autocomplete: 'off', placeholder: 'v*, latest' });
  const excludeTags = h('input', { type: 'text', autocomplete: 'off' });
  const interval = h('input', { type: 'number', min: '10', max: '604800', placeholder: '60' });
  const initialSync = h('select', {}, h('option', { value: 'notify' }, 'Notify: one event per existing tag'),
    h('option', { value: 'silent' }, 'Silent: learn the existing tags without events'));
  const insecure = h('input', { type: 'checkbox' });
  const remoteOnly = h('fieldset', { hidden: true },
    h('legend', {}, 'Remote registry'),
    field('Registry credentials: username', username),
    field('Registry credentials: password', password, 'Write-only: never shown again.'),
    field('Tag globs', tags, 'Only tags matching one of these (comma-separated) are polled.'),
    field('Excluded tag globs', excludeTags),
    field('Poll interval (seconds)', interval),
    field('Initial sync', initialSync),
    h('div', { class: 'field check' }, insecure, h('label', { for: insecure.id = uid() }, 'Plain HTTP (insecure registry)')));
  kind.addEventListener('change', () => { remoteOnly.hidden = kind.value !== 'remote'; });

  const webhooks = h('div', { class: 'webhooks' });
  const forms = [];
  const addWebhook = () => {
    const n = forms.length + 1;
    const w = webhookFields(installed, null, `Webhook ${n}`);
    forms.push(w);
    webhooks.append(w.el);
    w.url.focus();
  };

  const form = h('form', { class: 'card', novalidate: true },
    field('Repository name', name, 'e.g. demo/app, or for a remote one library/alpine, ghcr.io/owner/image'),
    field('Kind', kind),
    field('Registry', registry, 'Local: only notifications from this registry host. Remote: the registry to poll (default from the name, else Docker Hub).'),
    remoteOnly,
    h('h2', {}, 'Webhooks'),
    h('p', { class: 'muted' }, 'Notifications created with the repository, in the same request.'),
    webhooks,
    button('Add a webhook', addWebhook),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Add repository')),
    status.el);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    status.clear();
    const body = { name: name.value.trim(), kind: kind.value };
    if (registry.value.trim()) body.registry = registry.value.trim();
    if (kind.value === 'remote') {
      if (username.value || password.value) body.credentials = { username: username.value, password: password.value };
      if (tags.value.trim()) body.tags = tags.value;
      if (excludeTags.value.trim()) body.exclude_tags = excludeTags.value;
      if (interval.value) body.poll_interval_secs = Number(interval.value);
      body.initial_sync = initialSync.value;
      if (insecure.checked) body.insecure = true;
    }
    body.webhooks = forms.filter((w) => w.url.value.trim()).map((w) => w.input());
    try {
      const repo = await api.post('/repositories', body);
      const settings = `#/repositories/${encodeURIComponent(repo.id)}`;
      const secrets = (repo.webhooks || []).filter((w) => w.secret);
      if (secrets.length === 0) {
        // The answer is the settings page's content: no need to ask again.
        handOver(repo);
        window.location.hash = settings;
        return;
      }
      // Generated secrets are shown once, here, and kept nowhere.
      form.replaceWith(h('div', { class: 'card' },
        h('p', { role: 'status' }, `Repository ${repo.name} added.`),
        secrets.map((w) => shownOnce(w.url, w.secret)),
        h('a', { href: settings, class: 'button primary' }, 'Open Repository Settings')));
    } catch (e) {
      status.error(e.message);
    }
  });
  append(main, title('Add repository'), form);
}
