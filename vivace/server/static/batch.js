// Batch mode: N raw prompts (one per line) sent at once in one request, each streaming into its own panel.
//
// One /v1/completions request with a list of prompts, not N requests: the browser opens at most six
// HTTP/1.1 connections per host, so N separate streams would not all run at once. Choice i of the
// stream is prompt i. The usage chunk gives the batch's exact token total; a panel's own count is its
// streamed chunks (one per generated token, except a token whose text is held back, e.g. half a UTF-8
// character, whose text arrives with the next).

import { choiceText } from './reply.js';
import { StreamTimer, tokensPerSecond } from './stats.js';
import { h, isAbort, showError, showStats } from './view.js';

/** Wires the batch section `root` to the API through `ctx`. */
export function initBatch(ctx, root) {
  const $ = (sel) => root.querySelector(sel);
  const prompts = $('#batch-prompts');
  const run = $('#batch-run');
  const stop = $('#batch-stop');
  const panels = $('#batch-panels');
  const summary = $('#batch-summary');
  const error = $('#batch-error');
  let controller = null;

  function panel(i, text) {
    return h('article', { class: 'panel batch-panel', dataset: { index: i } },
      h('div', { class: 'panel-head' }, h('span', { class: 'badge' }, `#${i + 1}`), h('span', { class: 'panel-prompt' }, text)),
      h('div', { class: 'text generated' }),
      h('div', { class: 'stats', hidden: true }));
  }

  async function start() {
    showError(error, null);
    const lines = prompts.value.split('\n').filter((line) => line.trim() !== '');
    let body;
    try {
      if (!lines.length) throw new Error('enter at least one prompt, one per line');
      body = { model: ctx.model(), prompt: lines, ...ctx.sampling() };
    } catch (err) {
      showError(error, err);
      return;
    }
    const views = lines.map((line, i) => panel(i, line));
    panels.replaceChildren(...views);
    summary.textContent = '';
    summary.hidden = true;
    const sentMs = performance.now();
    const timers = lines.map(() => new StreamTimer());
    const counts = lines.map(() => 0);
    const finished = lines.map(() => false);
    views.forEach((view) => view.classList.add('streaming'));
    const finishPanel = (i, note) => {
      const view = views[i];
      finished[i] = true;
      view.classList.remove('streaming');
      const stats = view.querySelector('.stats');
      showStats(stats, timers[i].finish(counts[i]), note);
      stats.hidden = false;
    };
    let usage = null;
    controller = new AbortController();
    run.disabled = true;
    stop.disabled = false;
    const onChunk = (chunk) => {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices ?? []) {
        const i = choice.index;
        if (!(i in views)) continue;
        const text = choiceText(choice);
        if (text || choice.finish_reason) {
          timers[i].first();
          counts[i] += 1;
        }
        if (text) views[i].querySelector('.generated').textContent += text;
        if (choice.finish_reason) finishPanel(i, choice.finish_reason === 'length' ? 'hit max_tokens' : '');
      }
    };
    let stopped = false;
    try {
      await ctx.client.stream('/v1/completions', body, { signal: controller.signal, onChunk });
    } catch (err) {
      if (isAbort(err)) stopped = true;
      else showError(error, err);
    } finally {
      controller = null;
      run.disabled = false;
      stop.disabled = true;
    }
    lines.forEach((_, i) => finished[i] || finishPanel(i, stopped ? 'stopped' : 'failed'));
    const total = usage?.completion_tokens ?? counts.reduce((a, b) => a + b, 0);
    const endMs = performance.now();
    const wall = endMs - sentMs;
    const rate = tokensPerSecond(total, sentMs, null, endMs);
    summary.dataset.tokens = total;
    summary.dataset.prompts = lines.length;
    summary.dataset.tokPerSec = rate ?? '';
    summary.textContent = `${lines.length} prompts · ${total} tokens${usage ? '' : ' (counted)'} in ${(wall / 1000).toFixed(2)} s`
      + ` · ${rate === null ? '–' : rate.toFixed(1)} tok/s overall` + (stopped ? ' · stopped' : '');
    summary.hidden = false;
  }

  run.addEventListener('click', start);
  stop.addEventListener('click', () => controller?.abort());
}
