// Which onnxruntime execution providers this machine offers. The only other file that imports
// onnxruntime-node is session.ts beside it.
import { listSupportedBackends } from 'onnxruntime-node';

export type ProviderName = 'cuda' | 'dml' | 'webgpu' | 'cpu';

/** Execution providers the installed onnxruntime-node binary can create, in order of preference. */
export function detectProviders(): ProviderName[] {
  const names = new Set(listSupportedBackends().map((b) => b.name));
  const order: ProviderName[] = ['cuda', 'dml', 'webgpu', 'cpu'];
  return order.filter((p) => names.has(p));
}
