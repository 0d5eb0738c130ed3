/**
 * SHA-256 whose intermediate state can be written down and picked up again in another process:
 * the eight working words, the count of bytes hashed and the (under 64) bytes of the unfinished
 * block. A large blob continued across Lambda invocations carries this state in its follow-up
 * task, so that the next invocation reads the source with Range from where the registry's upload
 * session stands and still checks the digest of the whole blob before the closing PUT.
 *
 * Node's crypto cannot export a hash state, hence this implementation (FIPS 180-4, checked
 * against node:crypto in test/large-blob.test.ts). It is only used for the chunked large-blob
 * path; everything else hashes with node:crypto.
 */

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

const INITIAL = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/** The serialisable state: `v1.<hex of 8 words>.<bytes hashed>.<base64 of the unfinished block>`. */
export type Sha256State = string;

export class ResumableSha256 {
  private readonly h = new Int32Array(INITIAL);
  private readonly w = new Int32Array(64);
  private readonly block = new Uint8Array(64);
  private blockLength = 0;
  private total = 0;

  /** Bytes hashed so far. */
  get bytes(): number {
    return this.total;
  }

  static restore(state: Sha256State): ResumableSha256 {
    const match = /^v1\.([0-9a-f]{64})\.(\d{1,16})\.([A-Za-z0-9+/=]{0,88})$/.exec(state);
    if (!match) throw new Error('not a resumable sha256 state');
    const hash = new ResumableSha256();
    const words = match[1] as string;
    for (let i = 0; i < 8; i++) hash.h[i] = Number.parseInt(words.slice(i * 8, i * 8 + 8), 16) | 0;
    hash.total = Number(match[2]);
    const rest = Buffer.from(match[3] as string, 'base64');
    if (rest.length >= 64 || rest.length !== hash.total % 64 || !Number.isSafeInteger(hash.total)) throw new Error('not a resumable sha256 state');
    hash.block.set(rest, 0);
    hash.blockLength = rest.length;
    return hash;
  }

  save(): Sha256State {
    const words = Array.from(this.h, (x) => (x >>> 0).toString(16).padStart(8, '0')).join('');
    return `v1.${words}.${this.total}.${Buffer.from(this.block.subarray(0, this.blockLength)).toString('base64')}`;
  }

  update(data: Uint8Array): this {
    let offset = 0;
    this.total += data.length;
    if (this.blockLength > 0) {
      const take = Math.min(64 - this.blockLength, data.length);
      this.block.set(data.subarray(0, take), this.blockLength);
      this.blockLength += take;
      offset = take;
      if (this.blockLength < 64) return this;
      this.compress(this.block, 0);
      this.blockLength = 0;
    }
    const whole = offset + Math.floor((data.length - offset) / 64) * 64;
    if (whole > offset) this.compress(data, offset, whole);
    offset = whole;
    if (offset < data.length) {
      this.block.set(data.subarray(offset), 0);
      this.blockLength = data.length - offset;
    }
    return this;
  }

  /** The digest, `sha256:<hex>` (the state is not changed: hashing may not go on after it, though). */
  digest(): string {
    const copy = ResumableSha256.restore(this.save());
    const bits = copy.total * 8;
    const padding = Buffer.alloc(((copy.blockLength < 56 ? 56 : 120) - copy.blockLength) + 8);
    padding[0] = 0x80;
    padding.writeUInt32BE(Math.floor(bits / 2 ** 32), padding.length - 8);
    padding.writeUInt32BE(bits >>> 0, padding.length - 4);
    const total = copy.total;
    copy.update(padding);
    copy.total = total;
    return `sha256:${Array.from(copy.h, (x) => (x >>> 0).toString(16).padStart(8, '0')).join('')}`;
  }

  private compress(data: Uint8Array, offset: number, end = offset + 64): void {
    compressBlocks(this.h, this.w, data, offset, end);
  }
}

/** The compression function over the 64-byte blocks of data[offset, end). */
function compressBlocks(h: Int32Array, w: Int32Array, data: Uint8Array, offset: number, end: number): void {
  let h0 = h[0] as number;
  let h1 = h[1] as number;
  let h2 = h[2] as number;
  let h3 = h[3] as number;
  let h4 = h[4] as number;
  let h5 = h[5] as number;
  let h6 = h[6] as number;
  let h7 = h[7] as number;
  for (let o = offset; o < end; o += 64) {
    for (let i = 0, p = o; i < 16; i++, p += 4) w[i] = ((data[p] as number) << 24) | ((data[p + 1] as number) << 16) | ((data[p + 2] as number) << 8) | (data[p + 3] as number);
    for (let i = 16; i < 64; i++) {
      const x = w[i - 15] as number;
      const y = w[i - 2] as number;
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[i] = ((w[i - 16] as number) + s0 + (w[i - 7] as number) + s1) | 0;
    }
    let a = h0;
    let b = h1;
    let c = h2;
    let d = h3;
    let e = h4;
    let f = h5;
    let g = h6;
    let k = h7;
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const t1 = (k + S1 + ((e & f) ^ (~e & g)) + (K[i] as number) + (w[i] as number)) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      k = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    h0 = (h0 + a) | 0;
    h1 = (h1 + b) | 0;
    h2 = (h2 + c) | 0;
    h3 = (h3 + d) | 0;
    h4 = (h4 + e) | 0;
    h5 = (h5 + f) | 0;
    h6 = (h6 + g) | 0;
    h7 = (h7 + k) | 0;
  }
  h[0] = h0;
  h[1] = h1;
  h[2] = h2;
  h[3] = h3;
  h[4] = h4;
  h[5] = h5;
  h[6] = h6;
  h[7] = h7;
}
