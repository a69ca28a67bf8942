// Plugins: the built-in and installed ones, upload and replace, remove.

import { api, plugins, setPlugins } from './api.js';
import { h, append, field, notice, title, table, badge, button } from './dom.js';

export async function pluginsPage(main) {
  render(main, await plugins(true));
}

/** After a write, the page changes its own list (one round trip per action). */
function render(main, list, message) {
  const status = notice();
  const rows = list.map((p) => h('tr', {},
    h('th', { scope: 'row' }, p.name),
    h('td', {}, p.version),
    h('td', {}, badge(p.source)),
    h('td', {}, p.description),
    h('td', {}, p.config_keys.length
      ? h('ul', { class: 'keys' }, p.config_keys.map((k) => h('li', {}, h('code', {}, k.name), k.required ? ' (required)' : '', ': ', k.description)))
      : '—'),
    h('td', {}, p.source === 'installed'
      ? button('Remove', async () => {
        // eslint-disable-next-line no-alert
        if (!window.confirm(`Remove plugin ${p.name}?`)) return;
        try {
          await api.delete(`/plugins/${encodeURIComponent(p.name)}`);
          const rest = list.filter((x) => x.name !== p.name);
          setPlugins(rest);
          main.replaceChildren();
          render(main, rest, `Removed ${p.name}.`);
        } catch (e) {
          status.error(e.message);
        }
      }, { class: 'danger', 'aria-label': `Remove ${p.name}` })
      : '')));

  const name = h('input', { type: 'text', required: true, autocomplete: 'off', spellcheck: 'false', pattern: '[a-z0-9-]+' });
  const file = h('input', { type: 'file', accept: '.wasm,application/wasm', required: true });
  const upload = h('form', { class: 'card', novalidate: true },
    h('h2', {}, 'Upload a plugin'),
    field('Plugin name', name, 'Lowercase letters, digits and -. The name of an installed plugin replaces it.'),
    field('Component (.wasm)', file),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Upload plugin')),
    status.el);
  upload.addEventListener('submit', async (event) => {
    event.preventDefault();
    status.clear();
    if (!name.value.trim() || !file.files[0]) {
      status.error('Give a name and choose a .wasm component.');
      return;
    }
    const replacing = list.some((p) => p.name === name.value.trim());
    try {
      const bytes = await file.files[0].arrayBuffer();
      const p = await api.put(`/plugins/${encodeURIComponent(name.value.trim())}`, bytes, 'application/wasm');
      const now = [...list.filter((x) => x.name !== p.name), p].sort((a, b) => a.name.localeCompare(b.name));
      setPlugins(now);
      main.replaceChildren();
      render(main, now, `${replacing ? 'Replaced' : 'Installed'} ${p.name} ${p.version}.`);
    } catch (e) {
      status.error(e.message);
    }
  });
  const top = notice();
  append(main, title('Plugins'), top.el,
    table(['Plugin', 'Version', 'Source', 'What it sends', 'Configuration keys', ''], rows),
    upload);
  if (message) top.ok(message);
}
