// Completion mode: a raw prompt (no chat template) continued by the model.

import { endNote, streamReply } from './reply.js';
import { showError, showStats } from './view.js';

/** Wires the completion section `root` to the API through `ctx`. */
export function initCompletion(ctx, root) {
  const $ = (sel) => root.querySelector(sel);
  const prompt = $('#completion-prompt');
  const run = $('#completion-run');
  const stop = $('#completion-stop');
  const output = $('#completion-output');
  const stats = $('#completion-stats');
  const error = $('#completion-error');
  let controller = null;

  async function generate() {
    showError(error, null);
    let body;
    try {
      if (!prompt.value) throw new Error('enter a prompt first');
      body = { model: ctx.model(), prompt: prompt.value, ...ctx.sampling() };
    } catch (err) {
      showError(error, err);
      return;
    }
    const generated = output.querySelector('.generated');
    output.querySelector('.prompt').textContent = prompt.value;
    generated.textContent = '';
    output.hidden = false;
    stats.hidden = true;
    controller = new AbortController();
    run.disabled = true;
    stop.disabled = false;
    output.classList.add('streaming');
    try {
      const result = await streamReply(ctx.client, '/v1/completions', body, controller.signal, (text) => {
        generated.textContent += text;
      });
      showStats(stats, result.stats, endNote(result));
      stats.hidden = false;
    } catch (err) {
      showError(error, err);
    } finally {
      controller = null;
      output.classList.remove('streaming');
      run.disabled = false;
      stop.disabled = true;
    }
  }

  run.addEventListener('click', generate);
  stop.addEventListener('click', () => controller?.abort());
  $('#completion-append').addEventListener('click', () => {
    prompt.value += output.querySelector('.generated').textContent;
  });
  prompt.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey) && !run.disabled) generate();
  });
}
