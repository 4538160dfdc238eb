// The flow page: builds a form from the flow's inputs, draws its step graph, then runs the flow with
// fetch (EventSource cannot POST) and, as its named SSE events arrive, colours the graph, stretches
// the timeline's bars, fills each step's card and ends with the summary at the top.

import { drawGraph, markCriticalPath, setNodeItems, setNodeState } from './flow_graph.js';
import { Timeline } from './flow_timeline.js';

const KEY_STORE = 'vivace.apiKey'; // shared with the main UI: sessionStorage, never outlives the tab
const name = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop());
const $ = (id) => document.getElementById(id);
const keyField = $('api-key');
keyField.value = sessionStorage.getItem(KEY_STORE) ?? '';
const graph = $('graph');
const timeline = new Timeline($('timeline'), $('timeline-axis'));

let running = null; // the AbortController of the run in progress
let clock = null; // {origin, frame}: performance.now() at the flow's t=0, and the pending animation frame

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

const seconds = (s) => `${s.toFixed(2)} s`;

/** One card per step, in the flow's order; the graph and the timeline start over too. */
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
  drawGraph(graph, flow.steps);
  timeline.reset(flow.steps);
}

function card(step) { return document.getElementById(`step-${step}`); }

function setState(step, state, meta = '') {
  setNodeState(graph, step, state);
  const c = card(step);
  if (!c) return;
  c.dataset.state = state;
  c.querySelector('.state').textContent = state;
  const m = c.querySelector('.meta');
  m.textContent = meta;
  m.classList.toggle('failed', state === 'failed');
}

/** The element a step's (or a for_each item's) text goes into; an item's is created, under its label, on first use. */
function outFor(step, index, item) {
  const c = card(step);
  if (!c) return null;
  const out = c.querySelector('.out');
  if (index === null || index === undefined) return out;
  let li = out.querySelector(`li[data-index="${index}"]`);
  if (!li) {
    li = el('li', { 'data-index': String(index) });
    li.append(el('span', { class: 'item-label' }, item ?? `item ${index}`), el('span', { class: 'item-text' }));
    const after = [...out.children].find((other) => Number(other.dataset.index) > index);
    out.insertBefore(li, after ?? null);
  }
  return li.querySelector('.item-text');
}

/** Keeps the timeline's clock running between events, in the flow's own seconds. */
function startClock(at) {
  if (clock) return;
  clock = { origin: performance.now() - at * 1000, frame: 0 };
  const tick = () => {
    timeline.tick((performance.now() - clock.origin) / 1000);
    $('sum-wall').textContent = seconds(timeline.now);
    clock.frame = requestAnimationFrame(tick);
  };
  clock.frame = requestAnimationFrame(tick);
}

function stopClock() {
  if (clock) cancelAnimationFrame(clock.frame);
  clock = null;
}

function showSummary(e) {
  const speedup = e.wall_time > 0 ? e.step_time_sum / e.wall_time : null;
  $('sum-wall').textContent = seconds(e.wall_time);
  $('sum-critical').textContent = seconds(e.critical_path_time);
  $('sum-sequential').textContent = seconds(e.step_time_sum);
  $('sum-speedup').textContent = speedup === null ? '–' : `${speedup.toFixed(2)}×`;
  $('sum-path').textContent = `critical path: ${e.critical_path.join(' → ') || '–'}` +
    (e.ok ? '' : ` · failed: ${e.failed.join(', ')}`);
  Object.assign($('summary').dataset, {
    wall: e.wall_time, critical: e.critical_path_time, sequential: e.step_time_sum, tokens: e.tokens,
  });
}

const handlers = {
  step_started(e) {
    startClock(e.at);
    timeline.start(e.step, e.index, e.at, e.item);
    if (e.index !== null) {
      outFor(e.step, e.index, e.item);
      return;
    }
    setState(e.step, 'running', e.items === null ? '' : `${e.items} items`);
    if (e.items !== null) setNodeItems(graph, e.step, e.items);
  },
  delta(e) {
    const out = outFor(e.step, e.index);
    if (out) out.textContent += e.text;
  },
  step_finished(e) {
    timeline.finish(e.step, e.index, e.finished_at, 'done', e.started_at);
    if (e.index !== null) return;
    const note = e.parse_error ? ` · parser fell back to its default (${e.parse_error})` : '';
    setState(e.step, 'done', `${e.tokens} tokens · ${e.duration.toFixed(2)}s${note}`);
  },
  step_failed(e) {
    timeline.finish(e.step, e.index, e.at, 'failed');
    if (e.index === null) setState(e.step, 'failed', e.error);
    else outFor(e.step, e.index)?.after(el('span', { class: 'item-error' }, e.error));
  },
  flow_finished(e) {
    stopClock();
    timeline.tick(e.wall_time);
    showSummary(e);
    markCriticalPath(graph, e.critical_path);
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
  stopClock();
  buildSteps(flow);
  for (const id of ['sum-wall', 'sum-critical', 'sum-sequential', 'sum-speedup']) $(id).textContent = '–';
  $('sum-path').textContent = '';
  $('summary').hidden = false;
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
    if (running === controller) {
      running = null;
      stopClock();
      $('stop').disabled = true;
    }
  }
}

/** The header's page links: the playground, then every flow this server has (this one marked current). */
function showPages(flows) {
  const list = $('pages').querySelector('ul');
  for (const f of flows) {
    const link = el('a', { href: `/flows/${encodeURIComponent(f.name)}` }, `${f.name} flow`);
    if (f.name === name) link.setAttribute('aria-current', 'page');
    const li = el('li');
    li.append(link);
    list.append(li);
  }
}

async function init() {
  const response = await fetch('/v1/flows', { headers: headers() });
  if (!response.ok) { $('status').textContent = await errorText(response); return; }
  const flows = (await response.json()).data;
  const flow = flows.find((f) => f.name === name);
  if (!flow) { $('status').textContent = `no flow named ${name}`; return; }
  $('status').textContent = '';
  showPages(flows);
  document.title = `vivace · ${flow.name}`;
  $('flow-title').textContent = flow.name;
  $('flow-description').textContent = flow.description;
  for (const input of flow.inputs) {
    const label = el('label', {}, input.name);
    if (input.description) label.append(el('small', {}, input.description));
    label.append(el('input', { type: 'text', name: input.name, id: `input-${input.name}`, value: input.default ?? '',
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

$('conn').addEventListener('submit', (event) => {
  event.preventDefault(); // Enter in the key field: apply it
  keyField.dispatchEvent(new Event('change'));
});
keyField.addEventListener('change', () => {
  sessionStorage.setItem(KEY_STORE, keyField.value.trim());
  if (!document.body.dataset.ready) { $('inputs').replaceChildren(); init(); }
});
init();
