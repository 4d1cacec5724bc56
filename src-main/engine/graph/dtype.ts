// Element types of graph values and their ONNX TensorProto.DataType codes.

export type DType = 'float32' | 'float16' | 'bfloat16' | 'float64' | 'int64' | 'int32' | 'int8' | 'uint8' | 'bool';

export const ONNX_DATA_TYPE: Record<DType, number> = {
  float32: 1,
  uint8: 2,
  int8: 3,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
  bfloat16: 16,
};

export const BYTES_PER_ELEMENT: Record<DType, number> = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
  float64: 8,
  int64: 8,
  int32: 4,
  int8: 1,
  uint8: 1,
  bool: 1,
};

export const isFloat = (t: DType): boolean =>
  t === 'float32' || t === 'float16' || t === 'bfloat16' || t === 'float64';

/** The safetensors dtype names for the graph types that have one. */
export const SAFETENSORS_DTYPE: Partial<Record<DType, string>> = {
  float32: 'F32',
  float16: 'F16',
  bfloat16: 'BF16',
  float64: 'F64',
  int64: 'I64',
  int32: 'I32',
  int8: 'I8',
  uint8: 'U8',
  bool: 'BOOL',
};

export function dtypeFromSafetensors(name: string): DType | undefined {
  for (const [k, v] of Object.entries(SAFETENSORS_DTYPE)) if (v === name) return k as DType;
  return undefined;
}
