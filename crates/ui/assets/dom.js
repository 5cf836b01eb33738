// Element building. Every value is set as text or as an attribute, never parsed as HTML:
// this module is the reason an ErrorMessage like `<img src=x onerror=...>` shows as text.

/** An element: `h('a', {href: '#/x', class: 'c'}, 'text', child, ...)`.
 *  Attributes: `class`, `dataset` (object), `on` (object of listeners), booleans (true sets
 *  the attribute, false/null/undefined leaves it out); anything else via setAttribute.
 *  Children: strings and numbers become text nodes; null/undefined/false are skipped;
 *  arrays are flattened. */
export function h(tag, attrs, ...children) {
  const el = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'on') {
      for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'class') {
      el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    } else if (key === 'value' && 'value' in el) {
      el.value = value;
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

/** Append children (text for strings and numbers). */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace every child of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** The element with this id. */
export function byId(id) {
  return document.getElementById(id);
}
