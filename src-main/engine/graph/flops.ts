// Analytic floating-point operation count of a graph (multiply-add = 2), over the nodes the
// outputs need: matrix products and convolutions, which dominate the UNet's cost. Used by the
// benchmark (fraction of the GPU's peak) and by the studio's time estimate.
import type { Graph, Node } from './graph';
import { liveNodes } from './onnx-model';
import { numel } from './shape';

/** One node's FLOPs (0 for anything but matrix products, convolutions and attention). */
export function nodeFlops(n: Node): number {
  const [a, b] = n.inputs;
  const out = n.outputs[0];
  switch (n.op) {
    case 'MatMul': {
      const k = a!.shape[a!.shape.length - 1];
      return 2 * numel(out.shape) * k;
    }
    case 'Gemm': {
      const transA = n.attrs.transA?.value === 1;
      const k = transA ? a!.shape[0] : a!.shape[1];
      return 2 * numel(out.shape) * k;
    }
    case 'Conv': {
      // each output element: C_in/group * kernel multiply-adds
      const perOutput = b!.shape.slice(1).reduce((x, y) => x * y, 1);
      return 2 * numel(out.shape) * perOutput;
    }
    case 'ConvTranspose': {
      // each input element scatters into C_out/group * kernel outputs
      const perInput = b!.shape.slice(1).reduce((x, y) => x * y, 1);
      return 2 * numel(a!.shape) * perInput;
    }
    case 'MultiHeadAttention': {
      // q k^T and p v: 2 * (B * Lq * Lk * H*D) each
      const [batch, lq, inner] = a!.shape;
      const lk = b!.shape[1];
      return 4 * batch * lq * lk * inner;
    }
    default:
      return 0;
  }
}

export function countFlops(graph: Graph): number {
  return liveNodes(graph).reduce((sum, n) => sum + nodeFlops(n), 0);
}
