// Comparing trained LoRA files.
import type { LoraModuleWeights } from '../../src-main/engine/lora/lora-file';

/** ‖b.up − a.up‖ / ‖a.up‖ over every module (the same keys, in the same order, are expected). */
export function relativeUpDifference(a: readonly LoraModuleWeights[], b: readonly LoraModuleWeights[]): number {
  let num = 0;
  let den = 0;
  a.forEach((m, i) => {
    for (let j = 0; j < m.up.length; j++) {
      num += (m.up[j] - b[i].up[j]) ** 2;
      den += m.up[j] ** 2;
    }
  });
  if (den === 0) throw new Error('relativeUpDifference: the reference LoRA has all-zero up weights');
  return Math.sqrt(num / den);
}
