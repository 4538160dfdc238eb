// Timing one streamed response: time to first token and tokens per second.

/**
 * Decode speed: tokens after the first, over the time since the first arrived; with fewer than two
 * tokens (or no measurable time) it falls back to all tokens over the whole request. null when unknown.
 */
export function tokensPerSecond(tokens, startMs, firstMs, endMs) {
  if (!Number.isFinite(tokens) || tokens <= 0 || endMs == null) return null;
  if (tokens > 1 && firstMs != null && endMs > firstMs) return ((tokens - 1) * 1000) / (endMs - firstMs);
  return endMs > startMs ? (tokens * 1000) / (endMs - startMs) : null;
}

/** Clock for one request: create it when the request is sent, call first() on each token, finish() at the end. */
export class StreamTimer {
  constructor(now = () => performance.now()) {
    this.now = now;
    this.startMs = now();
    this.firstMs = null;
    this.endMs = null;
  }

  /** Marks a token's arrival; only the first one counts. */
  first() {
    if (this.firstMs === null) this.firstMs = this.now();
  }

  /** Stops the clock; `tokens` is the completion token count (from the usage chunk). */
  finish(tokens) {
    this.endMs = this.now();
    return this.stats(tokens);
  }

  stats(tokens) {
    return {
      ttftMs: this.firstMs === null ? null : this.firstMs - this.startMs,
      totalMs: this.endMs === null ? null : this.endMs - this.startMs,
      tokens: tokens ?? null,
      tokPerSec: tokensPerSecond(tokens, this.startMs, this.firstMs, this.endMs),
    };
  }
}
