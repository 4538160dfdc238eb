// Chat conversations kept in the browser (localStorage): each under its own key, plus an index and
// the current one's id, so two tabs only overwrite each other when they edit the same conversation.

const PREFIX = 'vivace.chat.';
const INDEX = `${PREFIX}index`; // [{id, title, updated}], newest first
const CURRENT = `${PREFIX}current`;
const UNTITLED = 'New conversation';

/** localStorage, or (where the browser blocks it) a Map for this page's lifetime, so chat still works. */
const storage = (() => {
  try {
    localStorage.setItem(`${PREFIX}probe`, '1');
    localStorage.removeItem(`${PREFIX}probe`);
    return localStorage;
  } catch {
    console.warn('vivace: this browser blocks localStorage; conversations last until the page is closed');
    const map = new Map();
    return {
      getItem: (key) => map.get(key) ?? null,
      setItem: (key, value) => map.set(key, String(value)),
      removeItem: (key) => map.delete(key),
    };
  }
})();

const read = (key, fallback) => {
  try {
    return JSON.parse(storage.getItem(key)) ?? fallback;
  } catch {
    return fallback; // not JSON (written by something else): start over rather than break the page
  }
};

/** A title from the first user message (its first line, shortened), until the user names it. */
export function defaultTitle(messages) {
  const first = messages.find((m) => m.role === 'user')?.content.trim().split('\n')[0] ?? '';
  return first ? (first.length > 48 ? `${first.slice(0, 47)}…` : first) : UNTITLED;
}

/** The conversations of this browser: list(), get(id), save(conv), remove(id), create(), current. */
export class ConversationStore {
  /** The index, newest first. */
  list() {
    return read(INDEX, []).filter((entry) => entry && typeof entry.id === 'string');
  }

  /** One conversation {id, title, named, created, updated, system, messages}, or null. */
  get(id) {
    const conv = read(PREFIX + id, null);
    return conv && Array.isArray(conv.messages) ? conv : null;
  }

  /** A new, empty conversation (saved, and made current). */
  create() {
    const now = Date.now();
    const conv = { id: `c${now.toString(36)}${Math.random().toString(36).slice(2, 6)}`, title: UNTITLED,
      named: false, created: now, updated: now, system: '', messages: [] };
    this.save(conv);
    this.current = conv.id;
    return conv;
  }

  /** Writes `conv` (its title from its first message unless named) and moves it to the top of the list. */
  save(conv) {
    conv.updated = Date.now();
    if (!conv.named) conv.title = defaultTitle(conv.messages);
    storage.setItem(PREFIX + conv.id, JSON.stringify(conv));
    const rest = this.list().filter((entry) => entry.id !== conv.id);
    storage.setItem(INDEX, JSON.stringify([{ id: conv.id, title: conv.title, updated: conv.updated }, ...rest]));
  }

  remove(id) {
    storage.removeItem(PREFIX + id);
    storage.setItem(INDEX, JSON.stringify(this.list().filter((entry) => entry.id !== id)));
    if (this.current === id) storage.removeItem(CURRENT);
  }

  get current() {
    return storage.getItem(CURRENT);
  }

  set current(id) {
    storage.setItem(CURRENT, id);
  }

  /** The current conversation, else the newest, else a new one. */
  open() {
    const conv = this.get(this.current) ?? this.get(this.list()[0]?.id) ?? this.create();
    this.current = conv.id;
    return conv;
  }
}

/** A conversation as a JSON document: OpenAI-shaped messages (system first), each reply with its stats. */
export function exportConversation(conv) {
  const messages = conv.system ? [{ role: 'system', content: conv.system }] : [];
  for (const m of conv.messages) {
    messages.push(m.stats ? { role: m.role, content: m.content, stats: m.stats } : { role: m.role, content: m.content });
  }
  return {
    title: conv.title,
    created: new Date(conv.created).toISOString(),
    updated: new Date(conv.updated).toISOString(),
    messages,
  };
}
