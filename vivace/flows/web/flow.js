// The flow page: builds a form from the flow's inputs and a card per step, then runs the flow with
// fetch (EventSource cannot POST) and fills each card as its named SSE events arrive.

const KEY_STORE = 'vivace.apiKey'; // shared with the main UI: sessionStorage, never outlives the tab
const name = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop());
const $ = (id) => document.getElementById(id);
const keyField = $('api-key');
keyField.value = sessionStorage.getItem(KEY_STORE) ?? '';
keyField.addEventListener('change', () => sessionStorage.setItem(KEY_STORE, keyField.value.trim()));

let running = null; // the AbortController of the run in progress

function headers() {
  const h = { 'Content-Type': 'application/json' };
  if (keyField.value.trim()) h.Authorization = `Bearer ${keyField.value.trim()}`;
  return h;
}

async function errorText(response) {
  try { return (await response.json()).error.message; } catch { return `HTTP ${response.status}`; }
}

function el(tag, attrs = {}, text = '') {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

/** One card per step, in the flow's order. */
function buildSteps(flow) {
  const box = $('steps');
  box.replaceChildren();
  for (const step of flow.steps) {
    const card = el('section', { class: 'step', id: `step-${step.name}`, 'data-state': 'waiting' });
    const title = el('h2', {}, step.name);
    title.append(el('span', { class: 'state' }, 'waiting'));
    card.append(title);
    if (step.depends_on.length) card.append(el('p', { class: 'needs' }, `after ${step.depends_on.join(', ')}`));
    card.append(step.for_each ? el('ol', { class: 'items out' }) : el('div', { class: 'out' }));
    card.append(el('p', { class: 'meta' }));
    box.append(card);
  }
}

function card(step) { return document.getElementById(`step-${step}`); }

function setState(step, state, meta = '') {
  const c = card(step);
  if (!c) return;
  c.dataset.state = state;
  c.querySelector('.state').textContent = state;
  const m = c.querySelector('.meta');
  m.textContent = meta;
  m.classList.toggle('error', state === 'failed');
}

/** The element a step's (or a for_each item's) text goes into, created on first use. */
function outFor(step, index) {
  const c = card(step);
  if (!c) return null;
  const out = c.querySelector('.out');
  if (index === null || index === undefined) return out;
  let item = out.querySelector(`li[data-index="${index}"]`);
  if (!item) {
    item = el('li', { 'data-index': String(index) });
    const after = [...out.children].find((li) => Number(li.dataset.index) > index);
    out.insertBefore(item, after ?? null);
  }
  return item;
}

const handlers = {
  step_started(e) {
    if (e.index === null) setState(e.step, 'running');
    else outFor(e.step, e.index);
  },
  delta(e) {
    const out = outFor(e.step, e.index);
    if (out) out.textContent += e.text;
  },
  step_finished(e) {
    if (e.index !== null) return;
    const note = e.parse_error ? ` · parser fell back to its default (${e.parse_error})` : '';
    setState(e.step, 'done', `${e.tokens} tokens · ${e.duration.toFixed(2)}s${note}`);
  },
  step_failed(e) {
    if (e.index === null) setState(e.step, 'failed', e.error);
    else outFor(e.step, e.index)?.append(el('span', { class: 'error' }, ` ${e.error}`));
  },
  flow_finished(e) {
    $('summary').textContent = `wall ${e.wall_time.toFixed(2)}s · critical path ${e.critical_path_time.toFixed(2)}s ` +
      `(${e.critical_path.join(' → ')}) · one after another ${e.step_time_sum.toFixed(2)}s` +
      (e.ok ? '' : ` · failed: ${e.failed.join(', ')}`);
    document.body.dataset.flow = e.ok ? 'done' : 'failed';
  },
  error(e) {
    $('status').textContent = e.error?.message ?? 'the flow stopped with an error';
    document.body.dataset.flow = 'failed';
  },
};

/** Named SSE events from a fetch body: yields [event, data] per blank-line-terminated block. */
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) yield [event, JSON.parse(data.join('\n'))];
    }
  }
}

async function run(flow, inputs) {
  running?.abort();
  const controller = new AbortController();
  running = controller;
  buildSteps(flow);
  $('summary').textContent = '';
  $('status').textContent = 'running…';
  document.body.dataset.flow = 'running';
  $('stop').disabled = false;
  try {
    const response = await fetch(`/v1/flows/${encodeURIComponent(name)}`, {
      method: 'POST', headers: headers(), body: JSON.stringify({ inputs }), signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorText(response));
    for await (const [event, data] of sseEvents(response.body)) handlers[event]?.(data);
    if ($('status').textContent === 'running…') $('status').textContent = '';
  } catch (err) {
    if (err.name === 'AbortError') {
      $('status').textContent = 'stopped';
      document.body.dataset.flow = 'stopped';
    } else {
      $('status').textContent = err.message;
      document.body.dataset.flow = 'failed';
    }
  } finally {
    if (running === controller) { running = null; $('stop').disabled = true; }
  }
}

async function init() {
  const response = await fetch('/v1/flows', { headers: headers() });
  if (!response.ok) { $('status').textContent = await errorText(response); return; }
  const flow = (await response.json()).data.find((f) => f.name === name);
  if (!flow) { $('status').textContent = `no flow named ${name}`; return; }
  document.title = `vivace · ${flow.name}`;
  $('flow-title').textContent = flow.name;
  $('flow-description').textContent = flow.description;
  for (const input of flow.inputs) {
    const label = el('label', {}, input.name);
    if (input.description) label.append(el('small', {}, input.description));
    label.append(el('input', { name: input.name, id: `input-${input.name}`, value: input.default ?? '',
      ...(input.required ? { required: '' } : {}) }));
    $('inputs').append(label);
  }
  buildSteps(flow);
  $('flow-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const inputs = Object.fromEntries(new FormData(event.target).entries());
    run(flow, inputs);
  });
  $('stop').addEventListener('click', () => running?.abort());
  document.body.dataset.ready = 'true';
}

keyField.addEventListener('change', () => { if (!document.body.dataset.ready) { $('inputs').replaceChildren(); init(); } });
init();
