// Chat mode: a multi-turn conversation with a system prompt; messages can be edited, deleted, regenerated.
// Replies render as sanitized markdown (markdown.js); a typing indicator shows until the first token.

import { renderMarkdown } from './markdown.js';
import { endNote, streamReply } from './reply.js';
import { h, showError, showStats } from './view.js';

/** Three pulsing dots: the reply has been asked for and no token has arrived yet. */
const typingIndicator = () =>
  h('span', { class: 'typing', role: 'status', 'aria-label': 'waiting for the first token' }, h('i'), h('i'), h('i'));

/** Wires the chat section `root` to the API through `ctx` ({client, model(), sampling()}). */
export function initChat(ctx, root) {
  const $ = (sel) => root.querySelector(sel);
  const log = $('#chat-log');
  const form = $('#chat-form');
  const input = $('#chat-input');
  const system = $('#chat-system');
  const stopButton = $('#chat-stop');
  const error = $('#chat-error');
  let messages = []; // {id, role, content, stats, note}
  let nextId = 1;
  let controller = null;
  let editing = null; // id of the message being edited
  let streamingId = null; // id of the reply being streamed

  const busy = () => controller !== null;

  function history() {
    const turns = messages.map(({ role, content }) => ({ role, content }));
    const prompt = system.value.trim();
    return prompt ? [{ role: 'system', content: prompt }, ...turns] : turns;
  }

  /** Fills a message's content element: a reply as markdown (or the typing dots before its first token). */
  function showContent(el, msg) {
    if (msg.role !== 'assistant') el.textContent = msg.content;
    else if (!msg.content && msg.id === streamingId) el.replaceChildren(typingIndicator());
    else renderMarkdown(el, msg.content);
  }

  function messageView(msg) {
    const content = h('div', { class: msg.role === 'assistant' ? 'content markdown' : 'content' });
    showContent(content, msg);
    const stats = h('div', { class: 'stats' });
    if (msg.stats) showStats(stats, msg.stats, msg.note);
    else stats.hidden = true;
    const actions = h('div', { class: 'msg-actions' },
      h('button', { type: 'button', class: 'edit', disabled: busy(), onclick: () => startEdit(msg) }, 'Edit'),
      h('button', { type: 'button', class: 'delete', disabled: busy(), onclick: () => remove(msg) }, 'Delete'));
    const li = h('li', { class: `msg ${msg.role}`, dataset: { role: msg.role, id: msg.id } },
      h('div', { class: 'role' }, msg.role), content, stats, actions);
    if (editing === msg.id) {
      const area = h('textarea', { class: 'edit-box', rows: Math.min(12, msg.content.split('\n').length + 1) });
      area.value = msg.content;
      content.replaceWith(h('div', { class: 'editor' }, area,
        h('div', { class: 'row' },
          h('button', { type: 'button', class: 'save', onclick: () => saveEdit(msg, area.value) }, 'Save'),
          h('button', { type: 'button', class: 'cancel', onclick: () => { editing = null; render(); } }, 'Cancel'))));
      actions.hidden = true;
      queueMicrotask(() => area.focus());
    }
    return li;
  }

  function render() {
    log.replaceChildren(...messages.map(messageView));
    log.parentElement.classList.toggle('empty', messages.length === 0);
    form.querySelector('#chat-send').disabled = busy();
    $('#chat-regenerate').disabled = busy() || !messages.some((m) => m.role === 'user');
    $('#chat-clear').disabled = busy() || messages.length === 0;
    stopButton.disabled = !busy();
  }

  function startEdit(msg) {
    editing = msg.id;
    render();
  }

  function saveEdit(msg, text) {
    msg.content = text;
    if (msg.stats) msg.note = 'edited';
    editing = null;
    render();
  }

  function remove(msg) {
    messages = messages.filter((m) => m !== msg);
    render();
  }

  async function generate() {
    showError(error, null);
    let body;
    try {
      body = { model: ctx.model(), messages: history(), ...ctx.sampling() };
    } catch (err) {
      showError(error, err);
      return;
    }
    const reply = { id: nextId++, role: 'assistant', content: '', stats: null, note: '' };
    messages.push(reply);
    controller = new AbortController();
    editing = null;
    streamingId = reply.id;
    render();
    const view = log.lastElementChild;
    const content = view.querySelector('.content');
    view.classList.add('streaming');
    // Markdown is re-rendered at most once a frame, however fast the tokens come.
    let frame = 0;
    const paint = () => {
      frame = 0;
      showContent(content, reply);
      log.scrollTop = log.scrollHeight;
    };
    try {
      const result = await streamReply(ctx.client, '/v1/chat/completions', body, controller.signal, (text) => {
        reply.content += text;
        if (!frame) frame = requestAnimationFrame(paint);
      });
      reply.stats = result.stats;
      reply.note = endNote(result);
    } catch (err) {
      showError(error, err);
      if (!reply.content) messages = messages.filter((m) => m !== reply);
      else reply.note = 'failed';
    } finally {
      cancelAnimationFrame(frame);
      controller = null;
      streamingId = null;
      render();
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (busy()) return;
    const text = input.value.trim();
    if (!text) {
      // An empty send answers a trailing user turn (e.g. after deleting the reply to it).
      if (messages.at(-1)?.role === 'user') generate();
      return;
    }
    messages.push({ id: nextId++, role: 'user', content: text, stats: null, note: '' });
    input.value = '';
    generate();
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  stopButton.addEventListener('click', () => controller?.abort());
  $('#chat-regenerate').addEventListener('click', () => {
    const lastUser = messages.findLastIndex((m) => m.role === 'user');
    if (busy() || lastUser < 0) return;
    messages = messages.slice(0, lastUser + 1);
    generate();
  });
  $('#chat-clear').addEventListener('click', () => {
    messages = [];
    showError(error, null);
    render();
  });
  render();
}
