// Training settings: defaults, path handling and validation messages.
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_TRAIN_SETTINGS, resolveTrainSettings, settingsFingerprint, trajectorySettings } from '../../../src-main/engine/train/settings';

describe('resolveTrainSettings', () => {
  it('fills defaults and derives the checkpoint path from the output', () => {
    const s = resolveTrainSettings({ images: 'imgs', out: 'out/x.safetensors' });
    expect(s).toMatchObject({ ...DEFAULT_TRAIN_SETTINGS, images: resolve('imgs'), out: resolve('out/x.safetensors'), model: undefined });
    expect(s.checkpoint).toBe(resolve('out/x.checkpoint.safetensors'));
  });

  it('uses $LORA_STUDIO_HOME for models and cache', () => {
    const before = process.env.LORA_STUDIO_HOME;
    process.env.LORA_STUDIO_HOME = '/tmp/studio-home';
    try {
      const s = resolveTrainSettings({ images: 'i', out: 'o.safetensors' });
      expect(s.modelsDir).toBe(join('/tmp/studio-home', 'models'));
      expect(s.cacheDir).toBe(join('/tmp/studio-home', 'cache'));
    } finally {
      if (before === undefined) delete process.env.LORA_STUDIO_HOME;
      else process.env.LORA_STUDIO_HOME = before;
    }
  });

  it('names the setting and the accepted values in errors', () => {
    const base = { images: 'i', out: 'o.safetensors' };
    expect(() => resolveTrainSettings({ ...base, rank: 0 })).toThrow('rank must be a whole number from 1 to 1024, got 0');
    expect(() => resolveTrainSettings({ ...base, lr: -1 })).toThrow('lr must be a number above 0');
    expect(() => resolveTrainSettings({ ...base, targets: 'everything' as never })).toThrow('targets must be one of attention, transformer, transformer+conv');
    expect(() => resolveTrainSettings({ ...base, out: 'o.ckpt' })).toThrow('out must end in .safetensors');
    expect(() => resolveTrainSettings({ ...base, resolution: 100 })).toThrow('resolution must be a multiple of 8');
    expect(() => resolveTrainSettings({ ...base, warmupSteps: 10, steps: 5 })).toThrow('warmupSteps must be a whole number from 0 to 5');
    expect(() => resolveTrainSettings({ ...base, checkpoint: 'o.safetensors' })).toThrow('checkpoint and out must be different files');
    expect(() => resolveTrainSettings({ ...base, gradientCheckpointing: 'yes' as never })).toThrow('gradientCheckpointing must be true or false, got "yes"');
    expect(() => resolveTrainSettings({ ...base, trainTextEncoder: true, textEncoders: 'both' as never })).toThrow('textEncoders must be "all", "1" or "2" (which text encoders to train), got "both"');
    expect(() => resolveTrainSettings({ ...base, trainTextEncoder: true, textEncoders: 2 as never })).toThrow('textEncoders must be "all", "1" or "2" (which text encoders to train), got 2');
    expect(() => resolveTrainSettings({ ...base, textEncoders: '2' })).toThrow(
      'textEncoders "2" picks the text encoder to train, but trainTextEncoder is off; turn it on (CLI: --train-text-encoder 2)',
    );
  });

  it('fingerprints what changes the trajectory, not the step count of a constant schedule', () => {
    const base = { images: 'i', out: 'o.safetensors' };
    const fp = (x: object) => settingsFingerprint(resolveTrainSettings({ ...base, ...x }));
    expect(fp({ steps: 10 })).toBe(fp({ steps: 20 }));
    expect(fp({ steps: 10, lrSchedule: 'cosine' })).not.toBe(fp({ steps: 20, lrSchedule: 'cosine' }));
    expect(fp({ lr: 1e-3 })).not.toBe(fp({ lr: 2e-3 }));
    // gradient checkpointing changes memory and speed, not the losses: a run resumes with it either way
    expect(fp({ gradientCheckpointing: true })).toBe(fp({ gradientCheckpointing: false }));
    expect(resolveTrainSettings({ ...base, gradientCheckpointing: true }).gradientCheckpointing).toBe(true);
  });

  it('text encoders: old settings (no textEncoders) mean all of them and keep their fingerprint; one encoder changes it', () => {
    const base = { images: 'i', out: 'o.safetensors' };
    const old = resolveTrainSettings({ ...base, trainTextEncoder: true });
    expect(old.textEncoders).toBe('all');
    // The fingerprint runs of both encoders wrote before the choice existed (the UNet-only settings
    // plus these two): their checkpoints resume quietly.
    const before = { ...trajectorySettings(resolveTrainSettings(base)), trainTextEncoder: true, textEncoderLr: old.lr };
    expect(settingsFingerprint(old)).toBe(createHash('sha256').update(JSON.stringify(before)).digest('hex').slice(0, 16));
    const fp = (x: object) => settingsFingerprint(resolveTrainSettings({ ...base, trainTextEncoder: true, ...x }));
    expect(fp({ textEncoders: 'all' })).toBe(settingsFingerprint(old));
    expect(new Set([fp({}), fp({ textEncoders: '1' }), fp({ textEncoders: '2' })]).size).toBe(3);
    expect(trajectorySettings(resolveTrainSettings({ ...base, trainTextEncoder: true, textEncoders: '2' }))).toMatchObject({ trainTextEncoder: true, textEncoders: '2' });
  });
});
