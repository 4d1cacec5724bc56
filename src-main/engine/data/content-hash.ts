// Content hashes of files (SHA-256, hex), streamed so large images are not held in memory.
// Used for exact-duplicate detection and as the thumbnail cache key.
//
//   hashFile(path): Promise<string>
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

export async function hashFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
