// Small DOM helpers shared by the modes.

/** Creates an element: h('button', {class: 'x', onclick: f}, 'text', child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : value);
  }
  el.append(...children.filter((c) => c !== null && c !== undefined));
  return el;
}

const fmt = (value, digits) => (value === null || value === undefined ? '–' : value.toFixed(digits));

/** Writes a response's numbers into `el` (text for people, data-* for tests and scripts). */
export function showStats(el, stats, note = '') {
  el.dataset.ttftMs = stats.ttftMs ?? '';
  el.dataset.tokens = stats.tokens ?? '';
  el.dataset.tokPerSec = stats.tokPerSec ?? '';
  const parts = [
    `TTFT ${fmt(stats.ttftMs, 0)} ms`,
    `${fmt(stats.tokPerSec, 1)} tok/s`,
    `${stats.tokens ?? '–'} tokens`,
  ];
  if (stats.totalMs != null) parts.push(`${(stats.totalMs / 1000).toFixed(2)} s`);
  if (note) parts.push(note);
  el.textContent = parts.join(' · ');
  el.title = 'TTFT: request sent to first token. tok/s: tokens after the first over the time since it arrived.';
}

/** Shows an error message in `el` (or clears it with null). */
export function showError(el, err) {
  el.hidden = !err;
  el.textContent = err ? (err.status ? `Error ${err.status}: ${err.message}` : `Error: ${err.message}`) : '';
}

/** True for the error a fetch throws when its AbortController fires. */
export const isAbort = (err) => err?.name === 'AbortError';
