// What the benchmarks record about the device while they run: the process's peak GPU memory and
// how busy the GPU is (both polled with nvidia-smi: the CUDA provider exposes no counters), and
// the device's name.
import { execFileSync, spawn } from 'node:child_process';
import { cpus, totalmem } from 'node:os';
import type { ProviderName } from '../src-main/engine/runtime/providers';

/** Peak GPU memory of this process, polled with nvidia-smi (the CUDA provider exposes no counter). */
export function gpuMemoryPoller(device: ProviderName): { stop: () => Promise<number | undefined> } {
  if (device !== 'cuda') return { stop: async () => undefined };
  let peak = 0;
  const child = spawn('nvidia-smi', ['--query-compute-apps=pid,used_memory', '--format=csv,noheader,nounits', '-lms', '200'], { stdio: ['ignore', 'pipe', 'ignore'] });
  child.stdout.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n')) {
      const [pid, mib] = line.split(',').map((s) => s.trim());
      if (Number(pid) === process.pid) peak = Math.max(peak, Number(mib));
    }
  });
  child.on('error', () => undefined);
  return {
    stop: async () => {
      child.kill();
      return peak > 0 ? peak / 1024 : undefined;
    },
  };
}

/**
 * How busy the GPU is while it runs: the mean of nvidia-smi's utilization.gpu (the share of time a
 * kernel was running) over the timed steps. Far below 100% means the host does not feed it fast enough.
 */
export function gpuBusyPoller(device: ProviderName): { stop: () => number | undefined } {
  if (device !== 'cuda' && device !== 'webgpu') return { stop: () => undefined };
  const samples: number[] = [];
  const child = spawn('nvidia-smi', ['--query-gpu=utilization.gpu', '--format=csv,noheader,nounits', '-lms', '100'], { stdio: ['ignore', 'pipe', 'ignore'] });
  child.stdout.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n')) if (line.trim() !== '' && Number.isFinite(Number(line))) samples.push(Number(line));
  });
  child.on('error', () => undefined);
  return {
    stop: () => {
      child.kill();
      return samples.length ? samples.reduce((a, b) => a + b, 0) / samples.length : undefined;
    },
  };
}

/** The GPU's name from nvidia-smi, or the CPU's model, cores and memory. */
export function deviceName(device: ProviderName): string {
  if (device === 'cuda' || device === 'webgpu') {
    try {
      return execFileSync('nvidia-smi', ['--query-gpu=name', '--format=csv,noheader'], { encoding: 'utf8' }).trim().split('\n')[0];
    } catch {
      return device;
    }
  }
  return `${cpus()[0]?.model ?? 'cpu'} x${cpus().length}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`;
}
