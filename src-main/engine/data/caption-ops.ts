// Caption text operations, pure functions on strings (the Dataset applies them to files).
// Tags are the comma-separated parts of a caption, trimmed; operations that rebuild the tag list
// (trigger words, remove, shuffle) join with ", " and collapse line breaks into the list.
//
//   splitTags(caption), joinTags(tags)
//   prependTrigger(caption, trigger)    moves it to the front if present elsewhere; idempotent
//   appendTrigger(caption, trigger)     moves it to the end if present elsewhere; idempotent
//   findReplace(caption, find, replacement, { caseSensitive })   plain text, every occurrence
//   removeTag(caption, tag)             every tag equal to `tag` (case-insensitive)
//   shuffleTags(caption, keepFirst, random)   kohya's shuffle_caption + keep_tokens; also used at training time
//   applyCaptionOperation(caption, op, random?): string
//   tagFrequency(captions): { tag, count }[]   images per tag, most frequent first
import { createRandom, randomInt } from './random';
import type { Random } from './random';

export type CaptionOperation =
  | { kind: 'prepend'; text: string }
  | { kind: 'append'; text: string }
  | { kind: 'replace'; find: string; replace: string; caseSensitive?: boolean }
  | { kind: 'remove-tag'; tag: string }
  | { kind: 'shuffle'; keepFirst: number; seed: number };

export function splitTags(caption: string): string[] {
  return caption
    .split(/[,\n]/u)
    .map((tag) => tag.trim())
    .filter((tag) => tag.length > 0);
}

export function joinTags(tags: readonly string[]): string {
  return tags.join(', ');
}

export function prependTrigger(caption: string, trigger: string): string {
  const word = trigger.trim();
  if (!word) return caption;
  const tags = splitTags(caption);
  if (tags[0] === word) return caption;
  return joinTags([word, ...tags.filter((tag) => tag !== word)]);
}

export function appendTrigger(caption: string, trigger: string): string {
  const word = trigger.trim();
  if (!word) return caption;
  const tags = splitTags(caption);
  if (tags[tags.length - 1] === word) return caption;
  return joinTags([...tags.filter((tag) => tag !== word), word]);
}

export function findReplace(
  caption: string,
  find: string,
  replacement: string,
  options: { caseSensitive?: boolean } = {},
): string {
  if (!find) return caption;
  if (options.caseSensitive ?? true) return caption.split(find).join(replacement);
  const escaped = find.replace(/[.*+?^${}()|[\]\\]/gu, '\\$&');
  return caption.replace(new RegExp(escaped, 'giu'), () => replacement);
}

export function removeTag(caption: string, tag: string): string {
  const target = tag.trim().toLowerCase();
  const tags = splitTags(caption);
  const kept = tags.filter((t) => t.toLowerCase() !== target);
  return kept.length === tags.length ? caption : joinTags(kept);
}

/** Keeps the first `keepFirst` tags in place and shuffles the rest (Fisher-Yates). */
export function shuffleTags(caption: string, keepFirst: number, random: Random): string {
  const tags = splitTags(caption);
  const keep = Math.max(0, Math.floor(keepFirst));
  const rest = tags.slice(keep);
  for (let i = rest.length - 1; i > 0; i--) {
    const j = randomInt(random, i + 1);
    [rest[i], rest[j]] = [rest[j], rest[i]];
  }
  return joinTags([...tags.slice(0, keep), ...rest]);
}

/**
 * Applies one operation. A 'shuffle' draws from `random` when given (one source shared over a
 * bulk edit, so captions get different orders), else from a fresh source seeded with `op.seed`.
 */
export function applyCaptionOperation(caption: string, op: CaptionOperation, random?: Random): string {
  switch (op.kind) {
    case 'prepend':
      return prependTrigger(caption, op.text);
    case 'append':
      return appendTrigger(caption, op.text);
    case 'replace':
      return findReplace(caption, op.find, op.replace, { caseSensitive: op.caseSensitive });
    case 'remove-tag':
      return removeTag(caption, op.tag);
    case 'shuffle':
      return shuffleTags(caption, op.keepFirst, random ?? createRandom(op.seed));
  }
}

/** How many captions contain each tag (a tag repeated within one caption counts once). */
export function tagFrequency(captions: Iterable<string>): { tag: string; count: number }[] {
  const counts = new Map<string, number>();
  for (const caption of captions) {
    for (const tag of new Set(splitTags(caption))) counts.set(tag, (counts.get(tag) ?? 0) + 1);
  }
  return [...counts]
    .map(([tag, count]) => ({ tag, count }))
    .sort((a, b) => b.count - a.count || (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0));
}
