// The console's entry: sign-in, the navigation, and the page for each
// `#/...` address. Each page makes its requests at once (in parallel), so
// showing it is one round trip.

import { ApiError, session, setSession, whenSignedOut } from './api.js';
import { h, field, notice, title } from './dom.js';
import { repositoriesPage, addRepositoryPage } from './repositories.js';
import { settingsPage } from './settings.js';
import { deliveriesPage, deliveryPage } from './deliveries.js';
import { eventsPage, eventPage } from './events.js';
import { pluginsPage } from './plugins.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');

const routes = [
  [/^#\/repositories\/new$/, () => addRepositoryPage],
  [/^#\/repositories\/([^/?]+)$/, (m) => (el) => settingsPage(el, decodeURIComponent(m[1]))],
  [/^#\/webhooks\/([^/?]+)\/deliveries$/, (m) => (el) => deliveriesPage(el, decodeURIComponent(m[1]))],
  [/^#\/deliveries\/([^/?]+)$/, (m) => (el) => deliveryPage(el, decodeURIComponent(m[1]))],
  [/^#\/events\/([^/?]+)$/, (m) => (el) => eventPage(el, decodeURIComponent(m[1]))],
  [/^#\/events(\?.*)?$/, (m) => (el) => eventsPage(el, new URLSearchParams((m[1] || '').slice(1)))],
  [/^#\/plugins$/, () => pluginsPage],
  [/^(#\/?|#\/repositories|)$/, () => repositoriesPage],
];

let signedIn = false;

async function show() {
  if (!signedIn) return;
  const hash = window.location.hash;
  const match = routes.map(([re, page]) => [hash.match(re), page]).find(([m]) => m);
  main.replaceChildren();
  for (const link of nav.querySelectorAll('a')) {
    const current = hash.startsWith(link.getAttribute('href'))
      || (link.getAttribute('href') === '#/repositories' && (hash === '' || hash === '#/'));
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (!match) {
    main.append(title('Not found'), h('p', {}, 'No console page at this address. ',
      h('a', { href: '#/repositories' }, 'Repositories')));
    return;
  }
  const [m, page] = match;
  try {
    await page(m)(main);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    const n = notice();
    n.error(e.message);
    main.append(n.el);
  }
  const heading = document.getElementById('page-title');
  if (heading) heading.focus();
}

function signInForm(message) {
  signedIn = false;
  setSession(null);
  nav.hidden = true;
  const token = h('input', {
    type: 'password', name: 'token', autocomplete: 'current-password', required: true, spellcheck: 'false',
  });
  const status = notice();
  if (message) status.error(message);
  const form = h('form', { class: 'card signin', novalidate: true },
    title('Sign in'),
    h('p', {}, 'Sign in with the gateway\'s admin token (', h('code', {}, 'data/admin.token'), ' or ',
      h('code', {}, 'CALLISTO_ADMIN_TOKEN'), ').'),
    field('Admin token', token),
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
    status.el);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    status.clear();
    if (!token.value.trim()) {
      status.error('Type the admin token.');
      token.focus();
      return;
    }
    try {
      const s = await session.signIn(token.value);
      token.value = '';
      started(s);
    } catch (e) {
      status.error(e.status === 401 ? 'Wrong admin token.' : e.message);
      token.select();
    }
  });
  main.replaceChildren(form);
  document.getElementById('page-title').focus();
}

function started(s) {
  setSession(s);
  signedIn = true;
  nav.hidden = false;
  show();
}

whenSignedOut((message) => {
  if (signedIn) signInForm(message);
});

document.getElementById('sign-out').addEventListener('click', async () => {
  try {
    await session.signOut();
  } catch {
    // Signed out already.
  }
  signInForm();
  const n = notice();
  n.ok('Signed out.');
  main.append(n.el);
});

// The skip link moves focus; following it would change the page's address.
document.querySelector('.skip').addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener('hashchange', show);

session.current().then(started, (e) => {
  signInForm(e.code === 'unauthorized' && /expired/.test(e.message) ? e.message : undefined);
});
