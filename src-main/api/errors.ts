// Errors that cross the API boundary: a stable code for the caller, a message for the user.
import type { ApiErrorInfo, ApiOutcome } from './contract';

export class ApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The caller-facing shape of any thrown value; unexpected errors keep their message. */
export function toErrorInfo(err: unknown): ApiErrorInfo {
  if (err instanceof ApiError) return { code: err.code, message: err.message };
  if (err instanceof Error) return { code: 'internal', message: err.message };
  return { code: 'internal', message: String(err) };
}

/** Runs one call and folds its result or error into an outcome that any transport can carry. */
export async function settle<T>(call: () => Promise<T>): Promise<ApiOutcome<T>> {
  try {
    return { result: await call() };
  } catch (err) {
    return { error: toErrorInfo(err) };
  }
}
