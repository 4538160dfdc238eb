// Classify mode: a text and comma-separated labels -> the probability of each label, as bars.

import { h, showError } from './view.js';

/** The labels typed in the field: comma-separated, trimmed; throws on none or duplicates. */
export function parseLabels(text) {
  const labels = text.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (labels.length === 0) throw new Error('enter at least one label (comma-separated)');
  const seen = new Set();
  for (const label of labels) {
    if (seen.has(label)) throw new Error(`label "${label}" is given twice`);
    seen.add(label);
  }
  return labels;
}

/** Wires the classify section `root` to the API through `ctx`. */
export function initClassify(ctx, root) {
  const $ = (sel) => root.querySelector(sel);
  const text = $('#classify-text');
  const labelsField = $('#classify-labels');
  const run = $('#classify-run');
  const result = $('#classify-result');
  const error = $('#classify-error');

  function bar(label, p, best) {
    const pct = (100 * p).toFixed(1);
    return h('li', { class: `bar${best ? ' best' : ''}`, dataset: { label, prob: p } },
      h('span', { class: 'bar-label' }, label),
      h('span', { class: 'bar-track' }, h('span', { class: 'bar-fill', style: `width: ${pct}%` })),
      h('span', { class: 'bar-value' }, `${pct}%`));
  }

  async function classify() {
    showError(error, null);
    let body;
    try {
      if (!text.value.trim()) throw new Error('enter a text to classify');
      body = { model: ctx.model(), text: text.value, labels: parseLabels(labelsField.value) };
    } catch (err) {
      showError(error, err);
      return;
    }
    run.disabled = true;
    result.classList.add('streaming');
    const started = performance.now();
    try {
      const out = await ctx.client.json('/v1/classify', { method: 'POST', body });
      const ms = performance.now() - started;
      result.replaceChildren(
        h('ol', { class: 'bars' }, ...body.labels.map((label) => bar(label, out.probabilities[label] ?? 0, label === out.label))),
        h('div', { class: 'stats', dataset: { ms } }, `label: ${out.label} · ${ms.toFixed(0)} ms · ${out.usage?.prompt_tokens ?? '–'} prompt tokens`));
    } catch (err) {
      showError(error, err);
    } finally {
      run.disabled = false;
      result.classList.remove('streaming');
    }
  }

  run.addEventListener('click', classify);
}
