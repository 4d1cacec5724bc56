// One readable sentence for any failure a screen shows.
import { ApiCallError } from './api-client';

export function describeError(err: unknown): string {
  if (err instanceof ApiCallError) {
    // A back end without this method is a version mismatch, not the user's mistake: say so.
    if (err.code === 'unknown-method') return `The back end does not offer this yet: ${err.message}`;
    return err.code ? `${err.message} (${err.code})` : err.message;
  }
  if (err instanceof Error) return err.message;
  return String(err);
}
