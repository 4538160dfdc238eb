// Model replies as markdown, safely: marked parses the text, any raw HTML in it is shown as text,
// DOMPurify keeps only the tags markdown itself makes (and only http(s)/mailto links), highlight.js
// colours code blocks and each block gets a Copy button. Vendored files: see vendor/README.md.

import DOMPurify from './vendor/purify.es.mjs';
import { Marked } from './vendor/marked.esm.js';
import hljs from './vendor/highlight/core.min.js';
import bash from './vendor/highlight/bash.min.js';
import c from './vendor/highlight/c.min.js';
import cpp from './vendor/highlight/cpp.min.js';
import go from './vendor/highlight/go.min.js';
import java from './vendor/highlight/java.min.js';
import javascript from './vendor/highlight/javascript.min.js';
import json from './vendor/highlight/json.min.js';
import python from './vendor/highlight/python.min.js';
import rust from './vendor/highlight/rust.min.js';
import shell from './vendor/highlight/shell.min.js';
import sql from './vendor/highlight/sql.min.js';
import typescript from './vendor/highlight/typescript.min.js';
import xml from './vendor/highlight/xml.min.js';
import yaml from './vendor/highlight/yaml.min.js';
import { h } from './view.js';

const LANGUAGES = { bash, c, cpp, go, java, javascript, json, python, rust, shell, sql, typescript, xml, yaml };
for (const [name, grammar] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, grammar);

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (ch) => ESCAPES[ch]);

// Raw HTML (block or inline) renders as the literal text the model wrote; an image becomes a link,
// so a reply cannot make the browser fetch a URL (a way to leak the conversation) just by being shown.
const marked = new Marked({
  gfm: true,
  breaks: true,
  renderer: {
    html: ({ text }) => escapeHtml(text),
    image: ({ href, text }) => `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`,
  },
});

// What markdown produces, nothing else: no img, svg, style, form, iframe or event attributes.
const SANITIZE = {
  ALLOWED_TAGS: [
    'a', 'blockquote', 'br', 'code', 'del', 'em', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'hr', 'li', 'ol', 'p',
    'pre', 'strong', 'table', 'tbody', 'td', 'th', 'thead', 'tr', 'ul',
  ],
  ALLOWED_ATTR: ['href', 'title', 'start', 'align', 'class'],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  RETURN_DOM_FRAGMENT: true,
};
const SANITIZE_CODE = { ALLOWED_TAGS: ['span'], ALLOWED_ATTR: ['class'], RETURN_DOM_FRAGMENT: true };

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A') {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer nofollow');
  }
});

/** Copies `text` to the clipboard; falls back to a selected textarea where the Clipboard API is missing (plain http). */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = h('textarea', { class: 'copy-buffer', readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  try {
    if (!document.execCommand('copy')) throw new Error('the browser refused to copy');
  } finally {
    area.remove();
  }
}

/** Colours one code block in place (its language from the fence, else guessed) and frames it with a Copy button. */
function decorate(pre) {
  const code = pre.querySelector('code');
  if (!code) return;
  const source = code.textContent;
  const fence = /\blanguage-([\w+#-]+)/.exec(code.className)?.[1] ?? '';
  const known = fence && hljs.getLanguage(fence);
  const result = known ? hljs.highlight(source, { language: fence, ignoreIllegals: true }) : hljs.highlightAuto(source);
  code.replaceChildren(DOMPurify.sanitize(result.value, SANITIZE_CODE));
  code.classList.add('hljs');
  const button = h('button', { type: 'button', class: 'copy', title: 'Copy the code' }, 'Copy');
  button.addEventListener('click', async () => {
    try {
      await copyText(source);
      button.textContent = 'Copied';
    } catch {
      button.textContent = 'Copy failed';
    }
    setTimeout(() => { button.textContent = 'Copy'; }, 1500);
  });
  const label = h('span', { class: 'code-lang' }, fence || result.language || 'text');
  const block = h('div', { class: 'code-block' }, h('div', { class: 'code-head' }, label, button));
  pre.replaceWith(block);
  block.append(pre);
}

/** Renders markdown `text` into `el`, replacing what it held; no HTML from `text` reaches the DOM. */
export function renderMarkdown(el, text) {
  const fragment = DOMPurify.sanitize(marked.parse(text), SANITIZE);
  for (const pre of fragment.querySelectorAll('pre')) decorate(pre);
  el.replaceChildren(fragment);
}
