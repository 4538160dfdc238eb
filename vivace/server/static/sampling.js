// The sampling controls: read into request fields, remembered in localStorage.

const NUMBERS = {
  temperature: parseFloat,
  top_p: parseFloat,
  top_k: (s) => (/^-?\d+$/.test(s) ? parseInt(s, 10) : NaN),
  max_tokens: (s) => (/^\d+$/.test(s) ? parseInt(s, 10) : NaN),
  seed: (s) => (/^-?\d+$/.test(s) ? parseInt(s, 10) : NaN),
};
const STORE = 'vivace.sampling';

/** Stop strings from the field: comma-separated, spaces around commas ignored; escapes \n \t \, \\ and \(space). */
export function parseStops(text) {
  const stops = [];
  let current = '';
  let loose = 0; // trailing unescaped spaces in `current`, dropped if the stop ends there
  const end = () => {
    const stop = current.slice(0, current.length - loose);
    if (stop) stops.push(stop);
    current = '';
    loose = 0;
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\\' && i + 1 < text.length) {
      const next = text[++i];
      current += next === 'n' ? '\n' : next === 't' ? '\t' : next;
      loose = 0;
    } else if (c === ',') {
      end();
    } else if (c === ' ' || c === '\t') {
      if (current) { current += c; loose += 1; }
    } else {
      current += c;
      loose = 0;
    }
  }
  end();
  return stops;
}

/**
 * The request fields the form sets; empty fields are left out (server defaults apply).
 * Throws an Error naming the field when a value is not a number.
 */
export function readSampling(form) {
  const out = {};
  for (const [name, parse] of Object.entries(NUMBERS)) {
    const field = form.elements[name];
    const raw = field.value.trim();
    // A number input holding text reports an empty value; badInput tells it apart from a blank field.
    if (field.validity?.badInput) throw new Error(`${name} must be a number`);
    if (raw === '') continue;
    const value = parse(raw);
    if (Number.isNaN(value)) throw new Error(`${name} must be ${parse === parseFloat ? 'a number' : 'an integer'}, got "${raw}"`);
    out[name] = value;
  }
  const stops = parseStops(form.elements.stop.value);
  if (stops.length) out.stop = stops;
  if (form.elements.ignore_eos.checked) out.ignore_eos = true;
  return out;
}

/** Restores the saved values into `form` and saves them on every change. */
export function rememberSampling(form) {
  try {
    const saved = JSON.parse(localStorage.getItem(STORE) ?? '{}');
    for (const [name, value] of Object.entries(saved)) {
      const field = form.elements[name];
      if (!field) continue;
      if (field.type === 'checkbox') field.checked = Boolean(value);
      else field.value = value;
    }
  } catch { /* unreadable storage: keep the defaults */ }
  form.addEventListener('input', () => {
    const values = {};
    for (const field of form.elements) {
      if (field.name) values[field.name] = field.type === 'checkbox' ? field.checked : field.value;
    }
    localStorage.setItem(STORE, JSON.stringify(values));
  });
  form.addEventListener('reset', () => setTimeout(() => localStorage.removeItem(STORE)));
}
