// Building the page. Everything from the API is untrusted text (a
// receiver's response body, a registry's tag): it only ever becomes a text
// node or an attribute value, never markup.

let counter = 0;

/** A unique id, to tie a label to its field. */
export function uid(prefix = 'f') {
  counter += 1;
  return `${prefix}-${counter}`;
}

/** h('button', {type: 'button', onclick: f}, 'Text', child, ...) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'value') {
      el.value = value;
    } else if (key === 'checked') {
      el.checked = Boolean(value);
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Like `el.append`, but flattening arrays and skipping null/false. */
export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A labelled field: the label text is the field's accessible name. */
export function field(label, input, hint) {
  if (!input.id) input.id = uid();
  const parts = [h('label', { for: input.id }, label), input];
  if (hint) {
    const hintId = uid('hint');
    input.setAttribute('aria-describedby', hintId);
    parts.push(h('small', { id: hintId, class: 'hint' }, hint));
  }
  return h('div', { class: 'field' }, parts);
}

export function button(text, onclick, attrs = {}) {
  return h('button', { type: 'button', onclick, ...attrs }, text);
}

/** A local time, and the exact time on hover. */
export function when(ts) {
  if (!ts) return '—';
  const date = new Date(ts);
  return h('time', { datetime: ts, title: ts }, date.toLocaleString());
}

/** A body as the API carries it: text, or base64 for binary. */
export function bodyText(body) {
  if (!body) return '';
  if (body.encoding === 'utf8') return body.data;
  return `(${body.size} bytes of binary, base64) ${body.data}`;
}

export function headersList(headers) {
  if (!headers || headers.length === 0) return h('p', { class: 'muted' }, 'No headers');
  return h('dl', { class: 'headers' },
    headers.map(([name, value]) => [h('dt', {}, name), h('dd', {}, value)]));
}

export function pre(text, label) {
  return h('pre', { class: 'body', tabindex: '0', 'aria-label': label }, text);
}

/** A message region: errors are announced (role=alert), notes politely. */
export function notice() {
  const el = h('p', { class: 'notice', role: 'status', 'aria-live': 'polite' });
  return {
    el,
    error(message) {
      el.className = 'notice error';
      el.setAttribute('role', 'alert');
      el.textContent = message;
    },
    ok(message) {
      el.className = 'notice ok';
      el.setAttribute('role', 'status');
      el.textContent = message;
    },
    clear() {
      el.className = 'notice';
      el.textContent = '';
    },
  };
}

/** The page's heading, focused so keyboard and screen reader users land on it. */
export function title(text) {
  return h('h1', { tabindex: '-1', id: 'page-title' }, text);
}

export function table(headings, rows, caption) {
  return h('div', { class: 'table-wrap' },
    h('table', {},
      caption ? h('caption', {}, caption) : null,
      h('thead', {}, h('tr', {}, headings.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows)));
}

export function badge(text, kind) {
  return h('span', { class: `badge ${kind || ''}` }, text);
}
