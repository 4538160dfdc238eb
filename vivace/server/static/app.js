// The page's entry point: the API key, the model list, the mode tabs, and each mode wired to the API.

import { APIError, Client } from './api.js';
import { initBatch } from './batch.js';
import { initChat } from './chat.js';
import { initClassify } from './classify.js';
import { initCompletion } from './completion.js';
import { readSampling, rememberSampling } from './sampling.js';
import { h } from './view.js';

const KEY_STORE = 'vivace.apiKey'; // sessionStorage: the key does not outlive the tab
const MODES = ['chat', 'completion', 'batch', 'classify'];

const keyField = document.getElementById('api-key');
const modelSelect = document.getElementById('model');
const connStatus = document.getElementById('conn-status');
const samplingForm = document.getElementById('sampling');

keyField.value = sessionStorage.getItem(KEY_STORE) ?? '';
const client = new Client('', () => keyField.value.trim());

const ctx = {
  client,
  /** The selected model id; throws when none could be loaded. */
  model() {
    if (!modelSelect.value) throw new APIError(connStatus.textContent || 'no model loaded yet');
    return modelSelect.value;
  },
  sampling: () => readSampling(samplingForm),
};

function setStatus(text, state) {
  connStatus.textContent = text;
  connStatus.dataset.state = state;
}

async function loadModels() {
  setStatus('connecting…', 'pending');
  try {
    const ids = await client.models();
    const previous = modelSelect.value;
    modelSelect.replaceChildren(...ids.map((id) => new Option(id, id)));
    if (ids.includes(previous)) modelSelect.value = previous;
    modelSelect.disabled = ids.length === 0;
    setStatus(ids.length ? 'connected' : 'the server lists no models', ids.length ? 'ok' : 'error');
    keyField.classList.remove('needed');
    loadFlowLinks();
  } catch (err) {
    modelSelect.replaceChildren();
    modelSelect.disabled = true;
    if (err.status === 401) {
      setStatus(keyField.value ? 'API key rejected: check it' : 'this server needs an API key: enter it above', 'error');
      keyField.classList.add('needed');
    } else {
      setStatus(err.message, 'error');
    }
  }
}

/** A header link to each flow's page the server has (none when it serves no flows). */
async function loadFlowLinks() {
  let flows = [];
  try {
    flows = (await client.json('/v1/flows')).data;
  } catch { /* a server without flows answers 404 */ }
  const list = document.querySelector('#pages ul');
  for (const old of list.querySelectorAll('li.flow')) old.remove();
  for (const flow of flows) {
    list.append(h('li', { class: 'flow' }, h('a', { href: `/flows/${encodeURIComponent(flow.name)}` }, `${flow.name} flow`)));
  }
  document.getElementById('pages').dataset.flows = String(flows.length);
}

function showMode(mode) {
  if (!MODES.includes(mode)) mode = 'chat';
  for (const tab of document.querySelectorAll('[role=tab]')) {
    tab.setAttribute('aria-selected', String(tab.dataset.mode === mode));
  }
  for (const m of MODES) document.getElementById(`mode-${m}`).hidden = m !== mode;
  document.body.dataset.mode = mode;
}

for (const tab of document.querySelectorAll('[role=tab]')) {
  tab.addEventListener('click', () => {
    history.replaceState(null, '', `#${tab.dataset.mode}`);
    showMode(tab.dataset.mode);
  });
}
window.addEventListener('hashchange', () => showMode(location.hash.slice(1)));

document.getElementById('conn').addEventListener('submit', (event) => {
  event.preventDefault(); // Enter in the key field: apply it
  keyField.dispatchEvent(new Event('change'));
});
// On a narrow screen the sampling controls start folded so the conversation comes first.
if (matchMedia('(max-width: 820px)').matches) document.querySelector('.settings details').open = false;
keyField.addEventListener('change', () => {
  sessionStorage.setItem(KEY_STORE, keyField.value.trim());
  loadModels();
});

samplingForm.addEventListener('submit', (event) => event.preventDefault());
rememberSampling(samplingForm);
initChat(ctx, document.getElementById('mode-chat'));
initCompletion(ctx, document.getElementById('mode-completion'));
initBatch(ctx, document.getElementById('mode-batch'));
initClassify(ctx, document.getElementById('mode-classify'));
showMode(location.hash.slice(1));
document.body.dataset.ready = 'true';
loadModels();
