// runtime/session.ts options that matter on GPUs, checked where CI can run them (the CPU): session
// config entries reach onnxruntime (a bad value is refused by it, naming the key), the memory
// options are accepted, and runOnDevice, asked to keep outputs on a device the provider cannot
// keep them on, returns them on the host with the same values as run; download reads a tensor
// back through a copy session (on the CPU here, with an onnxruntime tensor standing in for a
// device buffer: the WebGPU case is checked by the bench's --state-on-device on a GPU).
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Graph } from '../../../src-main/engine/graph/graph';
import * as op from '../../../src-main/engine/graph/ops';
import { DeviceTensor, Session, type HostTensor } from '../../../src-main/engine/runtime/session';

function doubler(): Graph {
  const g = new Graph('doubler');
  const x = g.input('x', 'float32', [4]);
  g.output(op.mul(x, 2), 'y');
  g.output(op.add(x, 1), 'z');
  return g;
}
const x: HostTensor = { dtype: 'float32', shape: [4], data: Float32Array.of(1, 2, 3, 4) };

describe('session options', () => {
  it('passes session config entries to onnxruntime', async () => {
    await expect(Session.fromGraph(doubler(), { config: { 'session.load_model_format': 'ORT' } })).rejects.toThrow(); // reads the ONNX bytes as an ORT-format model
    const s = await Session.fromGraph(doubler(), { config: { 'session.intra_op.allow_spinning': '0' }, memoryPattern: false, initializersOutsideArena: true });
    expect(Array.from((await s.run({ x })).y.data as Float32Array)).toEqual([2, 4, 6, 8]);
    await s.release();
  });

  it('runOnDevice returns the outputs on the host where the provider cannot keep them', async () => {
    const s = await Session.fromGraph(doubler(), { provider: 'cpu', outputsOnDevice: ['y'] });
    const { host, device } = await s.runOnDevice({ x });
    expect(Object.keys(device)).toEqual([]);
    expect(Array.from(host.y.data as Float32Array)).toEqual([2, 4, 6, 8]);
    expect(Array.from(host.z.data as Float32Array)).toEqual([2, 3, 4, 5]);
    await s.release();
  });

  it('download copies a tensor back with its dtype, shape and values, one copy session per shape', async () => {
    const s = await Session.fromGraph(doubler(), { provider: 'cpu' });
    const a = await s.download(new DeviceTensor(new ort.Tensor('float32', Float32Array.of(1.5, -2, 3, 4, 5, 6), [2, 3])));
    expect(a.dtype).toBe('float32');
    expect(a.shape).toEqual([2, 3]);
    expect(Array.from(a.data as Float32Array)).toEqual([1.5, -2, 3, 4, 5, 6]);
    const b = await s.download(new DeviceTensor(new ort.Tensor('float16', Uint16Array.of(0x3c00, 0xc000), [2]))); // 1, -2
    expect(b.dtype).toBe('float16');
    expect(Array.from(b.data as Uint16Array)).toEqual([0x3c00, 0xc000]);
    await s.release();
  });
});
