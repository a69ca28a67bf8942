// Repository Settings: the repository's notifications (enable/disable,
// edit, delete, test) and the form that adds one: Webhook URL, Webhook
// Secret, plugin and its configuration, Test Webhook with View Details, Add
// Notification.

import { api, plugins } from './api.js';
import {
  h, append, field, notice, title, when, badge, button, bodyText, headersList, pre, uid,
} from './dom.js';

/** The keys every plugin reads (the SDK's standard filter). */
const STANDARD_KEYS = [
  ['events', 'Comma list of event types to send: image.pushed, image.deleted (default: all).'],
  ['tags', 'Comma list of tag globs to send, e.g. v*,latest.'],
  ['exclude_tags', 'Comma list of tag globs never to send.'],
  ['tag_regex', 'Regular expression a tag must match (unanchored; use ^...$ for the whole tag).'],
];

/** A generated secret, shown once. */
export function shownOnce(url, secret) {
  const id = uid('secret');
  return h('div', { class: 'secret-once' },
    h('label', { for: id }, `Webhook Secret of ${url} (shown once: copy it now)`),
    h('input', { id, type: 'text', readonly: true, value: secret, class: 'mono' }));
}

/**
 * The fields of one webhook. `existing` (a webhook view) fills them for
 * editing; then an empty secret keeps the current one.
 */
export function webhookFields(installed, existing, legend) {
  const url = h('input', {
    type: 'url', required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'https://ci.example.com/hooks/registry',
    value: existing ? existing.url : '',
  });
  const secret = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', class: 'mono' });
  const generate = h('input', { type: 'checkbox', id: uid() });
  generate.addEventListener('change', () => {
    secret.disabled = generate.checked;
    if (generate.checked) secret.value = '';
  });
  const plugin = h('select', {},
    installed.map((p) => h('option', { value: p.name }, `${p.name} ${p.version}`)));
  plugin.value = existing ? existing.plugin : 'default';
  const about = h('p', { class: 'hint' });
  const config = h('fieldset', { class: 'config' });
  const inputs = new Map();
  const values = new Map(Object.entries(existing ? existing.config : {}));

  const buildConfig = () => {
    for (const [key, input] of inputs) values.set(key, input.value);
    inputs.clear();
    const p = installed.find((x) => x.name === plugin.value);
    about.textContent = p ? p.description : '';
    const keys = [
      ...STANDARD_KEYS.map(([name, description]) => ({ name, description, required: false })),
      ...(p ? p.config_keys : []),
    ];
    config.replaceChildren(h('legend', {}, 'Plugin configuration'));
    for (const key of keys) {
      const input = h('input', {
        type: 'text', autocomplete: 'off', spellcheck: 'false', value: values.get(key.name) ?? '',
        required: key.required, 'aria-required': key.required ? 'true' : null, 'data-key': key.name,
      });
      inputs.set(key.name, input);
      config.append(field(key.required ? `${key.name} (required)` : key.name, input, key.description));
    }
  };
  plugin.addEventListener('change', buildConfig);
  buildConfig();

  const secretHint = existing
    ? `${existing.has_secret ? 'A secret is set.' : 'No secret is set.'} Type a new one to replace it; leave empty to keep it (a test from this form is then sent unsigned).`
    : 'Signs every request (Standard Webhooks). Type one, or generate one (shown once). Empty: requests are not signed.';
  const coalesce = h('input', {
    type: 'number', min: '1', max: '3600', step: '1', inputmode: 'numeric',
    value: existing && existing.coalesce_secs ? String(existing.coalesce_secs) : '',
  });
  const el = h('fieldset', { class: 'webhook' },
    legend ? h('legend', {}, legend) : null,
    field('Webhook URL', url),
    field('Webhook Secret', secret, secretHint),
    h('div', { class: 'field check' }, generate, h('label', { for: generate.id }, 'Generate a secret')),
    field('Plugin', plugin),
    about,
    config,
    field('Coalescing window (seconds)', coalesce,
      'Gather a burst of events into one delivery of the newest, sent this long after the first. Empty: send every event at once.'));
  const coalesceValue = () => (coalesce.value.trim() === '' ? null : Number(coalesce.value));

  const configValues = () => {
    const out = {};
    for (const [key, input] of inputs) if (input.value.trim() !== '') out[key] = input.value.trim();
    return out;
  };
  const secretValue = () => (generate.checked ? 'generate' : secret.value.trim() || undefined);
  return {
    el,
    url,
    /** A WebhookInput: to create, or to test unsaved. */
    input() {
      const body = { url: url.value.trim(), plugin: plugin.value, config: configValues() };
      const s = secretValue();
      if (s) body.secret = s;
      if (coalesceValue() !== null) body.coalesce_secs = coalesceValue();
      return body;
    },
    /** A WebhookPatch: the configuration is replaced as a whole. */
    patch() {
      const body = {
        url: url.value.trim(), plugin: plugin.value, config: configValues(), coalesce_secs: coalesceValue(),
      };
      const s = secretValue();
      if (s) body.secret = s;
      return body;
    },
    /** The unsaved test cannot send "generate": test with no secret then. */
    testInput() {
      const body = this.input();
      if (body.secret === 'generate') delete body.secret;
      return body;
    },
  };
}

/** What was sent and what came back: a test's or one attempt's. */
export function exchange(result) {
  const parts = [];
  const req = result.request;
  parts.push(h('h3', {}, 'Request'));
  if (req) {
    parts.push(h('p', {}, h('code', {}, `${req.method} ${req.url}`)),
      h('h4', {}, 'Headers'), headersList(req.headers),
      h('h4', {}, 'Body'), pre(bodyText(req.body), 'Request body'));
  } else {
    parts.push(h('p', { class: 'muted' }, 'Nothing was sent.'));
  }
  parts.push(h('h3', {}, 'Response'));
  const res = result.response;
  if (res) {
    parts.push(
      h('dl', { class: 'facts' },
        h('dt', {}, 'Status'), h('dd', {}, String(res.status)),
        h('dt', {}, 'Time'), h('dd', {}, `${result.duration_ms} ms`)),
      h('h4', {}, 'Headers'), headersList(res.headers),
      h('h4', {}, 'Body'), pre(bodyText(res.body), 'Response body'),
      res.truncated ? h('p', { class: 'muted' }, 'The body was longer than the gateway keeps; the rest was not recorded.') : null,
    );
  } else {
    parts.push(h('p', {}, 'No response: ', result.error ?? result.summary ?? 'the receiver did not answer.'),
      h('p', { class: 'muted' }, `After ${result.duration_ms ?? 0} ms.`));
  }
  return parts;
}

/** A test's outcome line with its View Details button and panel. */
function testOutcome(container, result) {
  const panelId = uid('details');
  const panel = h('section', { id: panelId, class: 'details', hidden: true, 'aria-label': 'Test details' },
    exchange(result));
  const toggle = button('View Details', () => {
    panel.hidden = !panel.hidden;
    toggle.setAttribute('aria-expanded', String(!panel.hidden));
  }, { 'aria-expanded': 'false', 'aria-controls': panelId });
  const ok = result.result === 'success';
  container.replaceChildren();
  append(container,
    h('p', { class: `outcome ${ok ? 'ok' : 'error'}`, role: 'status' },
      h('span', { class: 'test-summary' }, result.summary)),
    result.filtered ? h('p', { class: 'hint' }, `A real event like this one would be filtered out: ${result.filtered}`) : null,
    toggle,
    panel);
}

/** The repository's own settings, changed in one request. */
function repositoryForm(repo, saved) {
  const status = notice();
  const fields = [];
  const body = {};
  let collect;
  if (repo.kind === 'local') {
    const registry = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', value: repo.registry ?? '' });
    fields.push(field('Registry', registry, 'Only notifications from this registry host match; empty: any.'));
    collect = () => { body.registry = registry.value.trim(); };
  } else {
    const interval = h('input', { type: 'number', min: '10', max: '604800', value: String(repo.poll_interval_secs) });
    const tags = h('input', { type: 'text', autocomplete: 'off', value: (repo.tags || []).join(', ') });
    const exclude = h('input', { type: 'text', autocomplete: 'off', value: (repo.exclude_tags || []).join(', ') });
    const insecure = h('input', { type: 'checkbox', checked: repo.insecure, id: uid() });
    const username = h('input', { type: 'text', autocomplete: 'off', value: repo.username ?? '' });
    const password = h('input', { type: 'password', autocomplete: 'new-password' });
    const forget = h('input', { type: 'checkbox', id: uid() });
    fields.push(
      field('Poll interval (seconds)', interval),
      field('Tag globs', tags, 'Only tags matching one of these (comma-separated) are polled; empty: all.'),
      field('Excluded tag globs', exclude),
      h('div', { class: 'field check' }, insecure, h('label', { for: insecure.id }, 'Plain HTTP (insecure registry)')),
      field('Registry credentials: username', username),
      field('Registry credentials: password', password,
        repo.has_credentials ? 'A password is set: type a new one to replace it.' : 'Write-only: never shown again.'),
      h('div', { class: 'field check' }, forget, h('label', { for: forget.id }, 'Remove the credentials')));
    collect = () => {
      body.poll_interval_secs = Number(interval.value);
      body.tags = tags.value;
      body.exclude_tags = exclude.value;
      body.insecure = insecure.checked;
      if (forget.checked) body.credentials = null;
      else if (password.value) body.credentials = { username: username.value.trim(), password: password.value };
    };
  }
  const form = h('form', { class: 'card', novalidate: true, hidden: true },
    h('h2', {}, 'Repository'),
    fields,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Save repository')),
    status.el);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    status.clear();
    collect();
    try {
      saved(await api.patch(`/repositories/${encodeURIComponent(repo.id)}`, body));
    } catch (e) {
      status.error(e.message);
    }
  });
  return form;
}

function notificationRow(repo, w, installed, rerender, edit) {
  const urlId = uid('url');
  const status = notice();
  const outcome = h('div', { class: 'row-outcome' });
  const run = (f) => async () => {
    status.clear();
    try {
      await f();
    } catch (e) {
      status.error(e.message);
    }
  };
  const toggle = button(w.enabled ? 'Disable' : 'Enable', run(async () => {
    const saved = await api.patch(`/webhooks/${encodeURIComponent(w.id)}`, { enabled: !w.enabled });
    rerender(saved.enabled ? 'Notification enabled.' : 'Notification disabled.', (list) => list.map((x) => (x.id === saved.id ? saved : x)));
  }), { 'aria-describedby': urlId });
  return h('li', { class: 'notification card' },
    h('div', { class: 'notification-head' },
      h('code', { id: urlId, class: 'url' }, w.url),
      ' ', w.enabled ? badge('enabled', 'good') : badge('disabled', 'bad'),
      ' ', badge(w.plugin),
      w.has_secret ? [' ', badge('signed')] : null),
    w.disabled_reason ? h('p', { class: 'hint' }, `Disabled by the gateway: ${w.disabled_reason}`) : null,
    Object.keys(w.config).length
      ? h('p', { class: 'hint' }, Object.entries(w.config).map(([k, v]) => `${k}=${v}`).join(', '))
      : null,
    h('div', { class: 'actions' },
      toggle,
      button('Edit', () => edit(w), { 'aria-describedby': urlId }),
      button('Test', run(async () => {
        outcome.replaceChildren(h('p', { role: 'status' }, 'Sending a test…'));
        testOutcome(outcome, await api.post(`/webhooks/${encodeURIComponent(w.id)}/test`));
      }), { 'aria-describedby': urlId }),
      h('a', { href: `#/webhooks/${encodeURIComponent(w.id)}/deliveries`, class: 'button', 'aria-describedby': urlId }, 'Deliveries'),
      button('Delete', run(async () => {
        // eslint-disable-next-line no-alert
        if (!window.confirm(`Delete the notification to ${w.url}? Its pending deliveries end.`)) return;
        await api.delete(`/webhooks/${encodeURIComponent(w.id)}`);
        rerender('Notification deleted.', (list) => list.filter((x) => x.id !== w.id));
      }), { 'aria-describedby': urlId, class: 'danger' })),
    outcome,
    status.el);
}

/** A repository the previous action already has (just created): no need to ask again. */
let handed = null;
export function handOver(repo) {
  handed = repo;
}

export async function settingsPage(main, id) {
  const known = handed && handed.id === id ? handed : null;
  handed = null;
  const [repo, installed] = await Promise.all([
    known ?? api.get(`/repositories/${encodeURIComponent(id)}`), plugins()]);
  render(main, repo, installed);
}

function render(main, repo, installed, message, generated) {
  const top = notice();
  // Each write answers the webhook as saved: the page changes its own copy
  // rather than asking again (one round trip per action).
  const rerender = (note, change, secret) => {
    const fresh = { ...repo, webhooks: change(repo.webhooks || []) };
    main.replaceChildren();
    render(main, fresh, installed, note, secret);
  };
  const formArea = h('section', { 'aria-labelledby': 'form-title' });
  const showForm = (existing) => {
    const w = webhookFields(installed, existing, null);
    const status = notice();
    const outcome = h('div', { class: 'test-outcome' });
    const test = button('Test Webhook', async () => {
      status.clear();
      outcome.replaceChildren(h('p', { role: 'status' }, 'Sending a test…'));
      try {
        testOutcome(outcome, await api.post(`/repositories/${encodeURIComponent(repo.id)}/webhooks/test`, w.testInput()));
      } catch (e) {
        outcome.replaceChildren();
        status.error(e.message);
      }
    });
    const form = h('form', { class: 'card', novalidate: true },
      h('h2', { id: 'form-title', tabindex: '-1' }, existing ? 'Edit Notification' : 'Add Notification'),
      w.el,
      h('div', { class: 'actions' },
        test,
        h('button', { type: 'submit', class: 'primary' }, existing ? 'Save Notification' : 'Add Notification'),
        existing ? button('Cancel', () => { showForm(null); }) : null),
      status.el,
      outcome);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      status.clear();
      try {
        const saved = existing
          ? await api.patch(`/webhooks/${encodeURIComponent(existing.id)}`, w.patch())
          : await api.post(`/repositories/${encodeURIComponent(repo.id)}/webhooks`, w.input());
        // A generated secret is shown once, and not kept in the page's copy.
        const { secret: generatedSecret, ...view } = saved;
        const change = existing
          ? (list) => list.map((x) => (x.id === view.id ? view : x))
          : (list) => [...list, view];
        rerender(existing ? 'Notification saved.' : 'Notification added.', change, generatedSecret ? [view.url, generatedSecret] : null);
      } catch (e) {
        status.error(e.message);
      }
    });
    formArea.replaceChildren(form);
    if (existing) document.getElementById('form-title').focus();
  };

  const facts = [
    h('dt', {}, 'Repository'), h('dd', {}, repo.name),
    h('dt', {}, 'Kind'), h('dd', {}, repo.kind),
    h('dt', {}, 'Registry'), h('dd', {}, repo.registry ?? '—'),
  ];
  if (repo.kind === 'remote') {
    const p = repo.poll || {};
    facts.push(
      h('dt', {}, 'Tags polled'), h('dd', {}, (repo.tags || []).join(', ') || 'all'),
      h('dt', {}, 'Tags excluded'), h('dd', {}, (repo.exclude_tags || []).join(', ') || 'none'),
      h('dt', {}, 'Credentials'), h('dd', {}, repo.has_credentials ? `${repo.username} (password set)` : 'none'),
      h('dt', {}, 'Poll interval'), h('dd', {}, `${repo.poll_interval_secs} s`),
      h('dt', {}, 'Last poll'), h('dd', {}, when(p.last_poll_at), p.last_error ? [' — ', p.last_error] : null),
      h('dt', {}, 'Tags known'), h('dd', {}, String(p.tags_known ?? 0)),
    );
  }
  const list = (repo.webhooks || []).map((w) => notificationRow(repo, w, installed, rerender, showForm));
  const settings = repositoryForm(repo, (fresh) => {
    main.replaceChildren();
    render(main, fresh, installed, 'Repository saved.');
  });
  const editRepository = button('Edit repository', () => {
    settings.hidden = !settings.hidden;
    editRepository.setAttribute('aria-expanded', String(!settings.hidden));
    if (!settings.hidden) settings.querySelector('input').focus();
  }, { 'aria-expanded': 'false' });
  append(main, 
    title('Repository Settings'),
    h('dl', { class: 'facts card' }, facts),
    h('div', { class: 'actions' },
      editRepository,
      h('a', { class: 'button', href: `#/events?repository=${encodeURIComponent(repo.id)}` }, 'Events'),
      repo.kind === 'remote' ? button('Poll now', async () => {
        try {
          await api.post(`/repositories/${encodeURIComponent(repo.id)}/poll`);
          top.ok('Polling now.');
        } catch (e) {
          top.error(e.message);
        }
      }) : null,
      button('Delete repository', async () => {
        // eslint-disable-next-line no-alert
        if (!window.confirm(`Delete ${repo.name} and its notifications? Its events stay in the log.`)) return;
        try {
          await api.delete(`/repositories/${encodeURIComponent(repo.id)}`);
          window.location.hash = '#/repositories';
        } catch (e) {
          top.error(e.message);
        }
      }, { class: 'danger' })),
    settings,
    top.el,
    generated ? shownOnce(generated[0], generated[1]) : null,
    h('h2', {}, 'Notifications'),
    list.length ? h('ul', { class: 'notifications' }, list) : h('p', { class: 'muted' }, 'No notifications yet.'),
    formArea,
  );
  if (message) top.ok(message);
  showForm(null);
}
