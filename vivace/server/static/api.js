// Talking to the OpenAI-compatible API: JSON calls, and streamed responses read as Server-Sent Events.

/** An error from the server (OpenAI shape) or from reaching it; `status` is 0 when there was no response. */
export class APIError extends Error {
  constructor(message, status = 0, detail = null) {
    super(message);
    this.name = 'APIError';
    this.status = status;
    this.detail = detail;
  }
}

/** Incremental SSE parser: feed it decoded text with push(); it calls onData(data) once per complete event. */
export class SSEParser {
  constructor(onData) {
    this.onData = onData;
    this.buffer = '';
    this.data = [];
  }

  push(text) {
    this.buffer += text;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buffer);
      if (!m) return;
      // A lone trailing \r may be the first half of a \r\n that the next read completes.
      if (m[0] === '\r' && m.index === this.buffer.length - 1) return;
      const line = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      this.line(line);
    }
  }

  line(line) {
    if (line === '') {
      if (this.data.length) this.onData(this.data.join('\n'));
      this.data = [];
      return;
    }
    if (line.startsWith(':')) return; // comment / keep-alive
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
  }
}

/** Yields the data of each SSE event of a fetch response body as it arrives. */
export async function* sseData(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const ready = [];
  const parser = new SSEParser((data) => ready.push(data));
  try {
    for (;;) {
      const { value, done } = await reader.read();
      parser.push(done ? decoder.decode() : decoder.decode(value, { stream: true }));
      while (ready.length) yield ready.shift();
      if (done) return;
    }
  } finally {
    reader.releaseLock();
  }
}

async function errorOf(response) {
  let detail = null;
  try {
    detail = (await response.json()).error ?? null;
  } catch { /* not JSON */ }
  const message = detail?.message ?? `${response.status} ${response.statusText}`.trim();
  return new APIError(message, response.status, detail);
}

/** The API client; `apiKey()` is read on every call so a newly entered key applies at once. */
export class Client {
  constructor(baseUrl = '', apiKey = () => '') {
    this.baseUrl = baseUrl;
    this.apiKey = apiKey;
  }

  async request(path, { method = 'GET', body, signal } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const key = this.apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    let response;
    try {
      response = await fetch(this.baseUrl + path, {
        method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      throw new APIError(`cannot reach the server: ${err.message}`);
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  /** GET/POST returning the parsed JSON body. */
  async json(path, options) {
    return (await this.request(path, options)).json();
  }

  /** The ids of the served models. */
  async models() {
    return (await this.json('/v1/models')).data.map((m) => m.id);
  }

  /**
   * POST a streaming request and call onChunk(chunk) for every chunk until [DONE].
   * An error event inside the stream, or a stream cut before [DONE], throws APIError;
   * aborting `signal` throws the fetch's AbortError.
   */
  async stream(path, body, { signal, onChunk }) {
    const response = await this.request(path, {
      method: 'POST', signal, body: { ...body, stream: true, stream_options: { include_usage: true } },
    });
    for await (const data of sseData(response.body)) {
      if (data === '[DONE]') return;
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch {
        throw new APIError(`the server sent an event that is not JSON: ${data.slice(0, 80)}`);
      }
      if (chunk.error) throw new APIError(chunk.error.message, response.status, chunk.error);
      onChunk(chunk);
    }
    throw new APIError('the stream ended before [DONE] (the server closed the connection)');
  }
}
