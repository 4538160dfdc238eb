// Chat mode: a multi-turn conversation with a system prompt; messages can be edited, deleted, regenerated.
// Replies render as sanitized markdown (markdown.js); a typing indicator shows until the first token.
// Conversations are kept in the browser (conversations.js): listed, renamed, deleted, exported as JSON.

import { ConversationStore, exportConversation } from './conversations.js';
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
  const picker = $('#chat-conversations');
  const title = $('#chat-title');
  const store = new ConversationStore();
  let conv = null; // the conversation shown: {id, title, named, system, messages: [{id, role, content, stats, note}]}
  let nextId = 1;
  let controller = null;
  let editing = null; // id of the message being edited
  let streamingId = null; // id of the reply being streamed

  const busy = () => controller !== null;

  /** Shows conversation `next`; a reply whose stream a reload cut off (nothing arrived) is dropped. */
  function load(next) {
    conv = next;
    conv.messages = conv.messages.filter((m) => m.role !== 'assistant' || m.content || m.stats);
    nextId = Math.max(0, ...conv.messages.map((m) => m.id)) + 1;
    store.current = conv.id;
    system.value = conv.system ?? '';
    editing = null;
    showError(error, null);
    render();
  }

  /** Saves the shown conversation (in the list, it moves to the top). */
  function persist() {
    conv.system = system.value;
    try {
      store.save(conv);
    } catch (err) {
      showError(error, new Error(`the conversation could not be saved in this browser: ${err.message}`));
    }
    title.value = conv.title;
  }

  function showList() {
    picker.replaceChildren(...store.list().map((entry) => new Option(entry.title, entry.id)));
    picker.value = conv.id;
    title.value = conv.title;
  }

  function history() {
    const turns = conv.messages.map(({ role, content }) => ({ role, content }));
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
    const { messages } = conv;
    log.replaceChildren(...messages.map(messageView));
    log.parentElement.classList.toggle('empty', messages.length === 0);
    form.querySelector('#chat-send').disabled = busy();
    $('#chat-regenerate').disabled = busy() || !messages.some((m) => m.role === 'user');
    $('#chat-clear').disabled = busy() || messages.length === 0;
    stopButton.disabled = !busy();
    for (const el of [picker, title, $('#chat-new'), $('#chat-delete-conversation')]) el.disabled = busy();
    showList();
  }

  function startEdit(msg) {
    editing = msg.id;
    render();
  }

  function saveEdit(msg, text) {
    msg.content = text;
    if (msg.stats) msg.note = 'edited';
    editing = null;
    persist();
    render();
  }

  function remove(msg) {
    conv.messages = conv.messages.filter((m) => m !== msg);
    persist();
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
    conv.messages.push(reply);
    persist();
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
      if (!reply.content) conv.messages = conv.messages.filter((m) => m !== reply);
      else reply.note = 'failed';
    } finally {
      cancelAnimationFrame(frame);
      controller = null;
      streamingId = null;
      persist();
      render();
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (busy()) return;
    const text = input.value.trim();
    if (!text) {
      // An empty send answers a trailing user turn (e.g. after deleting the reply to it).
      if (conv.messages.at(-1)?.role === 'user') generate();
      return;
    }
    conv.messages.push({ id: nextId++, role: 'user', content: text, stats: null, note: '' });
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
    const lastUser = conv.messages.findLastIndex((m) => m.role === 'user');
    if (busy() || lastUser < 0) return;
    conv.messages = conv.messages.slice(0, lastUser + 1);
    generate();
  });
  $('#chat-clear').addEventListener('click', () => {
    conv.messages = [];
    showError(error, null);
    persist();
    render();
  });
  system.addEventListener('change', persist);
  picker.addEventListener('change', () => {
    const next = store.get(picker.value);
    if (next && !busy()) load(next);
  });
  title.addEventListener('change', () => {
    const name = title.value.trim();
    conv.named = Boolean(name); // cleared: back to the title from the first message
    if (name) conv.title = name;
    persist();
    render();
  });
  title.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') title.blur(); // commits, through 'change'
  });
  $('#chat-new').addEventListener('click', () => {
    if (!busy()) load(conv.messages.length ? store.create() : conv);
  });
  $('#chat-delete-conversation').addEventListener('click', () => {
    if (busy() || !confirm(`Delete the conversation "${conv.title}"?`)) return;
    store.remove(conv.id);
    load(store.open());
  });
  $('#chat-export').addEventListener('click', () => {
    const json = JSON.stringify(exportConversation(conv), null, 2);
    const url = URL.createObjectURL(new Blob([json], { type: 'application/json' }));
    const name = conv.title.replace(/[^\w.-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 60) || 'conversation';
    const link = h('a', { href: url, download: `${name}.json` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  load(store.open());
}
