/**
 * Feature tensors off the wire: raw little-endian bytes to float32 values.
 *
 * The JavaScript twin of edge/runtime/wire.py's `decode_tensor`: the same
 * checks, and bit for bit the same float32 values, for each encoding central
 * can send (fp16, the default; fp32; int8 with one scale per vector).
 */

const ITEM_SIZE = { DTYPE_FLOAT16: 2, DTYPE_FLOAT32: 4, DTYPE_INT8: 1 };

/**
 * One IEEE 754 half-precision value from its 16 bits.
 *
 * Layout, most significant bit first: 1 sign bit, 5 exponent bits (bias 15),
 * 10 fraction bits. Node 20 has no Float16Array, so the bits are taken apart
 * by hand. Every half is exactly a float32, so storing the result in a
 * Float32Array gives the very numbers numpy's `astype(np.float32)` gives.
 */
export function halfToNumber(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) {
    // Zero and subnormals: no implicit leading 1, fixed exponent -14,
    // i.e. fraction/1024 * 2^-14 = fraction * 2^-24.
    return sign * fraction * 2 ** -24;
  }
  if (exponent === 0x1f) {
    // All exponent bits set: infinity, or NaN when any fraction bit is set.
    return fraction ? NaN : sign * Infinity;
  }
  // Normal numbers: implicit leading 1, exponent unbiased by 15.
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

/**
 * A wire `Tensor` as float32 values, checked against its declared shape
 * (the same checks and results as edge/runtime/wire.py's `decode_tensor`).
 */
export function decodeTensor(tensor) {
  const itemSize = ITEM_SIZE[tensor.dtype];
  if (itemSize === undefined) throw new Error(`feature has unknown dtype ${tensor.dtype}`);
  const shape = tensor.shape.map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const bytes = tensor.data; // a Buffer: raw, little-endian, row-major
  if (bytes.length !== count * itemSize) {
    throw new Error(
      `feature declares shape [${shape}] of ${tensor.dtype} (${count * itemSize} bytes) ` +
        `but carries ${bytes.length} bytes`,
    );
  }
  // A DataView reads little-endian whatever the host's byte order.
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const values = new Float32Array(count);
  if (tensor.dtype === 'DTYPE_FLOAT16') {
    for (let i = 0; i < count; i++) values[i] = halfToNumber(view.getUint16(2 * i, true));
  } else if (tensor.dtype === 'DTYPE_FLOAT32') {
    for (let i = 0; i < count; i++) values[i] = view.getFloat32(4 * i, true);
  } else {
    // Symmetric int8: value = q * scale, one fp32 scale per vector along the
    // last axis. q * scale is exact in a double (8 + 24 significant bits), so
    // the one rounding on storing into the Float32Array gives numpy's float32
    // product bit for bit.
    const rowLength = shape.length ? shape[shape.length - 1] : 1;
    const rows = shape.length ? shape.slice(0, -1).reduce((a, b) => a * b, 1) : 1;
    if (tensor.scales.length !== rows) {
      throw new Error(`int8 feature has ${tensor.scales.length} scales for ${rows} rows`);
    }
    for (let i = 0; i < count; i++) {
      values[i] = view.getInt8(i) * tensor.scales[Math.floor(i / rowLength)];
    }
  }
  return { shape, values };
}

/** A decoded feature vector of `size` values, refused when it has another size or a NaN/inf. */
export function featureVector(tensor, size, what) {
  const { shape, values } = decodeTensor(tensor);
  if (shape.length !== 1 || (size !== undefined && shape[0] !== size)) {
    throw new Error(`${what} has shape [${shape}], expected [${size ?? 'd'}]`);
  }
  const bad = values.findIndex((v) => !Number.isFinite(v));
  if (bad !== -1) throw new Error(`${what} contains ${values[bad]} at index ${bad}`);
  return values;
}
