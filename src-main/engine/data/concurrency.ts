// Bounded concurrency for many small async jobs (header reads, decodes, thumbnails): at most
// `limit` run at once, results keep the input order, the first error is rethrown after the
// jobs already running have settled.
//
//   mapConcurrent(items, limit, job): Promise<R[]>

export async function mapConcurrent<T, R>(
  items: readonly T[],
  limit: number,
  job: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failure: { error: unknown } | null = null;
  const worker = async (): Promise<void> => {
    while (failure === null && next < items.length) {
      const index = next++;
      try {
        results[index] = await job(items[index], index);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  const workers = Array.from({ length: Math.max(1, Math.min(Math.floor(limit), items.length)) }, worker);
  await Promise.all(workers);
  if (failure !== null) throw (failure as { error: unknown }).error;
  return results;
}
