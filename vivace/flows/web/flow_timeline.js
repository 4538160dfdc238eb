// The run as a timeline: a row per step (and one per for_each item, labelled with its item), each
// with a bar from when it started to when it finished, stretched live while it runs. Times are the
// events' seconds since the flow started; bars are placed in percent of the run so far.

function el(tag, attrs = {}, text = '') {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

export class Timeline {
  /** `root`: the element the rows go in; `axis`: the element that shows the time scale. */
  constructor(root, axis) {
    this.root = root;
    this.axis = axis;
    this.bars = new Map(); // "step" or "step#index" -> {bar, start, end, state}
    this.now = 0;
  }

  /** Empty rows, one per step in the flow's order. */
  reset(steps) {
    this.bars.clear();
    this.now = 0;
    this.root.replaceChildren(...steps.map((s) => this.row(s.name, null, s.name, 'tl-step')));
    this.draw();
  }

  row(step, index, label, cls) {
    const bar = el('div', { class: 'tl-bar', 'data-state': 'waiting' });
    const row = el('div', { class: `tl-row ${cls}`, 'data-step': step });
    if (index !== null) row.dataset.index = String(index);
    row.append(el('span', { class: 'tl-label', title: label }, label), el('div', { class: 'tl-track' }));
    row.lastChild.append(bar);
    this.bars.set(index === null ? step : `${step}#${index}`, { bar, start: null, end: null, state: 'waiting' });
    return row;
  }

  entry(step, index, item) {
    const key = index === null || index === undefined ? step : `${step}#${index}`;
    if (!this.bars.has(key) && index !== null && index !== undefined) {
      // An item's row goes under its step, after the items with lower indexes.
      const rows = [...this.root.children];
      const after = rows.filter((r) => r.dataset.step === step && (r.dataset.index === undefined || Number(r.dataset.index) < index));
      after.at(-1).after(this.row(step, index, item ?? `item ${index}`, 'tl-item'));
    }
    return this.bars.get(key);
  }

  /** A step (index null) or a for_each item started at `at` seconds. */
  start(step, index, at, item) {
    const entry = this.entry(step, index, item);
    if (!entry) return;
    entry.start = at;
    entry.state = 'running';
    this.tick(at);
  }

  /** It ended at `end` seconds, as `state` (done or failed); `start` corrects the start when the event knows it. */
  finish(step, index, end, state, start = null) {
    const entry = this.entry(step, index);
    if (!entry) return;
    entry.start ??= start ?? end;
    entry.end = end;
    entry.state = state;
    this.tick(end);
  }

  /** Moves the clock to `seconds` (never backwards) and redraws. */
  tick(seconds) {
    this.now = Math.max(this.now, seconds);
    this.draw();
  }

  draw() {
    const span = this.now || 1;
    for (const { bar, start, end, state } of this.bars.values()) {
      bar.dataset.state = state;
      if (start === null) {
        bar.hidden = true;
        continue;
      }
      const stop = end ?? this.now;
      bar.hidden = false;
      bar.dataset.start = start.toFixed(3);
      bar.dataset.end = end === null ? '' : end.toFixed(3);
      bar.style.left = `${(100 * start) / span}%`;
      bar.style.width = `${Math.max(0, (100 * (stop - start)) / span)}%`;
      bar.title = `${start.toFixed(2)}s → ${end === null ? '…' : `${end.toFixed(2)}s`}`;
    }
    this.axis.textContent = `0 s … ${this.now.toFixed(2)} s`;
  }
}
