// Writes the UNet configs of bench/model-configs.ts (diffusers' UNet2DConditionModel keys, every
// default filled in) as one JSON file for bench/pytorch/reference.py, so the PyTorch reference
// builds exactly the UNets our bench builds: model-configs.ts stays the one source of truth.
// scripts/gpu-bundle.sh runs it; by hand:
//
//   npx tsx bench/pytorch/export-configs.ts [OUT]     (default .gpu-build/unet-configs.json)
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { writeFileAtomic } from '../../src-main/engine/io/atomic-write';
import { SD15, SDXL, TINY_SDXL } from '../model-configs';

/** The models reference.py can build, keyed by its --model names (bench.ts' names too). */
export const REFERENCE_UNET_CONFIGS = { sd15: SD15, sdxl: SDXL, 'tiny-sdxl': TINY_SDXL };

const out = resolve(process.argv[2] ?? '.gpu-build/unet-configs.json');
mkdirSync(dirname(out), { recursive: true });
writeFileAtomic(out, `${JSON.stringify({ source: 'bench/model-configs.ts', models: REFERENCE_UNET_CONFIGS }, null, 2)}\n`);
console.error(`wrote ${Object.keys(REFERENCE_UNET_CONFIGS).join(', ')} UNet configs to ${out}`);
