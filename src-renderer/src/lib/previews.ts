// Preview samples grouped into one timeline per prompt (and seed), each sorted by step.
import type { PreviewImage } from '../../../src-main/api/contract';

export interface PreviewTimeline {
  key: string;
  prompt: string;
  seed: number;
  images: PreviewImage[];
}

export function previewTimelines(previews: PreviewImage[]): PreviewTimeline[] {
  const groups = new Map<string, PreviewTimeline>();
  for (const p of previews) {
    const key = `${p.seed}\u0000${p.prompt}`;
    let group = groups.get(key);
    if (!group) groups.set(key, (group = { key, prompt: p.prompt, seed: p.seed, images: [] }));
    group.images.push(p);
  }
  for (const g of groups.values()) g.images.sort((a, b) => a.step - b.step);
  return [...groups.values()];
}
