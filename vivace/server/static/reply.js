// Streaming one reply (chat or completion) and timing it.

import { StreamTimer } from './stats.js';
import { isAbort } from './view.js';

/** The text a chunk's choice carries: chat chunks have delta.content, completion chunks have text. */
export const choiceText = (choice) => (choice.delta ? choice.delta.content : choice.text) ?? '';

/** What the stats line adds after the numbers for how a reply ended. */
export function endNote(result) {
  if (result.stopped) return 'stopped';
  if (result.finishReason === 'length') return 'hit max_tokens';
  return '';
}

/**
 * Streams `body` to `path`, calling onText(text) for each piece of the reply as it arrives.
 * Resolves to {stats, finishReason, stopped}; the token count comes from the final usage chunk
 * (or, when stopped before it, from the pieces counted). Server errors reject with APIError.
 */
export async function streamReply(client, path, body, signal, onText) {
  const timer = new StreamTimer();
  let usage = null;
  let pieces = 0;
  let finishReason = null;
  const onChunk = (chunk) => {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices ?? []) {
      const text = choiceText(choice);
      if (text) {
        timer.first();
        pieces += 1;
        onText(text);
      }
      if (choice.finish_reason) {
        timer.first();
        finishReason = choice.finish_reason;
      }
    }
  };
  try {
    await client.stream(path, body, { signal, onChunk });
  } catch (err) {
    if (!isAbort(err)) throw err;
    return { stats: timer.finish(pieces), finishReason, stopped: true };
  }
  return { stats: timer.finish(usage?.completion_tokens ?? pieces), finishReason, stopped: false };
}
