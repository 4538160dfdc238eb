// The flow's steps as a graph in inline SVG: a node per step, in rows by depth (a step sits one row
// below its deepest input), an edge per dependency. The SVG scales to its box, so it never overflows.

const SVG = 'http://www.w3.org/2000/svg';
const NODE_W = 108;
const NODE_H = 34;
const GAP_X = 12;
const GAP_Y = 38;
const PAD = 6;
const MAX_LABEL = 13; // characters shown in a node; the full name is its tooltip

function svg(tag, attrs = {}, text = '') {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

/** Rows of step names by depth, each row ordered by where its inputs sit (fewer crossing edges). */
export function layers(steps) {
  const needs = Object.fromEntries(steps.map((s) => [s.name, s.depends_on]));
  const depth = {};
  const depthOf = (name) => {
    depth[name] ??= needs[name].length ? 1 + Math.max(...needs[name].map(depthOf)) : 0;
    return depth[name];
  };
  const rows = [];
  for (const s of steps) (rows[depthOf(s.name)] ??= []).push(s.name);
  const column = {};
  for (const row of rows) {
    const mean = (name) => (needs[name].length ? needs[name].reduce((t, d) => t + column[d], 0) / needs[name].length : 0);
    row.sort((a, b) => mean(a) - mean(b)); // stable: ties keep the flow's order
    row.forEach((name, i) => { column[name] = (i + 0.5) / row.length; });
  }
  return rows;
}

/** Draws `steps` ([{name, depends_on}]) into the <svg> element `root`, replacing what it held. */
export function drawGraph(root, steps) {
  const rows = layers(steps);
  const widest = Math.max(...rows.map((r) => r.length));
  const width = widest * NODE_W + (widest - 1) * GAP_X + 2 * PAD;
  const height = rows.length * NODE_H + (rows.length - 1) * GAP_Y + 2 * PAD;
  const at = {};
  rows.forEach((row, depth) => {
    const rowWidth = row.length * NODE_W + (row.length - 1) * GAP_X;
    row.forEach((name, i) => {
      at[name] = { x: (width - rowWidth) / 2 + i * (NODE_W + GAP_X), y: PAD + depth * (NODE_H + GAP_Y), depth };
    });
  });
  root.replaceChildren();
  root.setAttribute('viewBox', `0 0 ${width} ${height}`);
  root.style.maxWidth = `${width}px`;
  const edges = svg('g', { class: 'edges' });
  for (const step of steps) {
    for (const dep of step.depends_on) {
      const a = at[dep];
      const b = at[step.name];
      const [x1, y1, x2, y2] = [a.x + NODE_W / 2, a.y + NODE_H, b.x + NODE_W / 2, b.y];
      const bend = (y2 - y1) / 2;
      edges.append(svg('path', {
        class: 'edge', 'data-from': dep, 'data-to': step.name, 'marker-end': 'url(#arrow)',
        d: `M${x1},${y1} C${x1},${y1 + bend} ${x2},${y2 - bend} ${x2},${y2 - 2}`,
      }));
    }
  }
  const marker = svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 8, markerHeight: 8,
    markerUnits: 'userSpaceOnUse',
    orient: 'auto-start-reverse' });
  marker.append(svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow' }));
  const defs = svg('defs');
  defs.append(marker);
  const nodes = svg('g', { class: 'nodes' });
  for (const step of steps) {
    const { x, y, depth } = at[step.name];
    const label = step.name.length > MAX_LABEL ? `${step.name.slice(0, MAX_LABEL - 1)}…` : step.name;
    const node = svg('g', { class: 'node', 'data-step': step.name, 'data-state': 'waiting', 'data-depth': depth,
      transform: `translate(${x},${y})` });
    node.append(svg('title', {}, step.for_each ? `${step.name} (for each of ${step.for_each})` : step.name),
      svg('rect', { width: NODE_W, height: NODE_H, rx: 7 }),
      svg('text', { x: NODE_W / 2, y: NODE_H / 2, 'dominant-baseline': 'central', 'text-anchor': 'middle' },
        step.for_each ? `${label} ×…` : label));
    nodes.append(node);
  }
  root.append(defs, edges, nodes);
}

const nodeOf = (root, step) => root.querySelector(`.node[data-step="${CSS.escape(step)}"]`);

/** Colours a step's node by its state (waiting, running, done, failed). */
export function setNodeState(root, step, state) {
  const node = nodeOf(root, step);
  if (node) node.dataset.state = state;
}

/** Shows how many items a for_each step fans out to. */
export function setNodeItems(root, step, count) {
  const text = nodeOf(root, step)?.querySelector('text');
  if (text) text.textContent = text.textContent.replace(/×.*$/, `×${count}`);
}

/** Marks the critical path's nodes and the edges between them. */
export function markCriticalPath(root, path) {
  for (const el of root.querySelectorAll('.critical')) el.classList.remove('critical');
  path.forEach((step, i) => {
    nodeOf(root, step)?.classList.add('critical');
    if (i > 0) {
      root.querySelector(`.edge[data-from="${CSS.escape(path[i - 1])}"][data-to="${CSS.escape(step)}"]`)
        ?.classList.add('critical');
    }
  });
}
