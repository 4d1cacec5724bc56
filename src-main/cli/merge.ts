// `lora-studio merge`: base model + LoRA(s) at strengths -> a new single-file checkpoint
// (A1111 / ComfyUI key layout), written tensor by tensor and atomically.
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { mergeIntoCheckpoint } from '../engine/lora/merge';
import { CliUsageError, type CliCommand } from './command';
import { importLoraArguments, openModelArgument } from './generate';

export const mergeCommand: CliCommand = {
  summary: 'Merge LoRAs into a model and save it as one .safetensors checkpoint',
  usage: `lora-studio merge --lora <file[:strength]> --out <file.safetensors> [--model <folder|file>]

  --model <folder|file>    diffusers model folder or single-file checkpoint
                           (default: the embedded tiny test model)
  --lora <file[:strength]> LoRA to merge (kohya or diffusers format), strength default 1; repeatable
  --out <file>             the new checkpoint (.safetensors, original LDM key layout)`,

  async run(args) {
    let parsed;
    try {
      parsed = parseArgs({
        args,
        options: {
          model: { type: 'string' },
          lora: { type: 'string', multiple: true },
          out: { type: 'string' },
        },
        allowPositionals: false,
        strict: true,
      });
    } catch (err) {
      throw new CliUsageError((err as Error).message);
    }
    const v = parsed.values;
    if (!v.lora || v.lora.length === 0) throw new CliUsageError('at least one --lora is required.');
    if (!v.out) throw new CliUsageError('--out is required.');
    if (!v.out.toLowerCase().endsWith('.safetensors')) throw new CliUsageError(`--out must name a .safetensors file, got ${v.out}.`);
    const out = resolve(v.out);
    if (v.model !== undefined && resolve(v.model) === out) throw new CliUsageError('--out must not be the model file itself.');

    const { model } = openModelArgument(v.model, undefined);
    const loras = importLoraArguments(model, v.lora);
    const started = Date.now();
    const written = mergeIntoCheckpoint(model, loras, out);
    console.log(
      `wrote ${out}: ${written.tensors} tensors, ${(written.bytes / 1e6).toFixed(1)} MB, ${written.modules} layer(s) changed, in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
    return 0;
  },
};
