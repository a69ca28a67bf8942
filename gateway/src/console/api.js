// The admin API, as curl calls it, with the session cookie instead of the
// bearer token. Writes carry the session's CSRF token.

let csrfToken = null;
let expiresAt = null;
let onSignedOut = () => {};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function setSession(session) {
  csrfToken = session ? session.csrf_token : null;
  expiresAt = session ? Date.parse(session.expires_at) : null;
}

/** Why a request found no session, in the words of the sign-in form. */
function signedOutMessage(serverMessage) {
  // The browser drops the cookie when it expires, so the gateway may only
  // see a request without one: the page knows when the session ended.
  if ((expiresAt !== null && Date.now() >= expiresAt - 1000) || /expired/.test(serverMessage)) {
    return 'Your session has expired. Sign in again.';
  }
  return 'You are signed out. Sign in again.';
}

/** Called with the server's message when a request finds no valid session. */
export function whenSignedOut(callback) {
  onSignedOut = callback;
}

async function call(method, path, body, contentType) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let payload;
  if (body !== undefined) {
    if (contentType) {
      payload = body;
      headers['Content-Type'] = contentType;
    } else {
      payload = JSON.stringify(body);
      headers['Content-Type'] = 'application/json';
    }
  }
  const url = path.startsWith('/console/') ? path : `/api/v1${path}`;
  let response;
  try {
    response = await fetch(url, {
      method, headers, body: payload, credentials: 'same-origin', cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, 'network', `The gateway did not answer: ${e.message}`);
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = new ApiError(
      response.status,
      data?.error?.code ?? 'error',
      data?.error?.message ?? `HTTP ${response.status}`,
    );
    if (response.status === 401 && !path.startsWith('/console/')) onSignedOut(signedOutMessage(error.message));
    throw error;
  }
  return data;
}

export const api = {
  get: (path) => call('GET', path),
  post: (path, body = {}) => call('POST', path, body),
  patch: (path, body) => call('PATCH', path, body),
  put: (path, bytes, contentType) => call('PUT', path, bytes, contentType),
  delete: (path) => call('DELETE', path),
};

export const session = {
  current: () => call('GET', '/console/session'),
  signIn: (token) => call('POST', '/console/session', { token }),
  signOut: () => call('DELETE', '/console/session'),
};

/** What the Plugins page learnt from its own writes. */
export function setPlugins(list) {
  pluginsCache = Promise.resolve(list);
}

/** The installed plugins, fetched once per page load (and by the Plugins page). */
let pluginsCache = null;
export function plugins(refresh = false) {
  if (refresh || !pluginsCache) {
    pluginsCache = api.get('/plugins').catch((e) => {
      pluginsCache = null;
      throw e;
    });
  }
  return pluginsCache;
}
