/**
 * A small, safe unpickler for the data that insightface's verification
 * .bin files hold, and nothing else. It interprets the pickle opcodes of
 * protocols 2-5 that build plain data (ints, bools, None, strings, bytes,
 * lists, tuples, dicts) plus numpy arrays of dtype uint8 / bool, and it
 * never calls anything: the few callables it accepts (numpy's array
 * reconstructors, numpy.dtype, _codecs.encode for latin-1) are recognised
 * by name and re-implemented here as data transformations.
 *
 * Any other global, or any opcode outside that set, is refused with a
 * QuantFaceError('E_FORMAT') naming the opcode or the global.
 */
import { QuantFaceError } from '../errors.js';

/** A numpy array read from a pickle (only 1-byte dtypes are accepted). */
export class NdArray {
  constructor(
    /** numpy dtype string: 'u1' (uint8) or 'b1' (bool). */
    readonly dtype: 'u1' | 'b1',
    readonly shape: number[],
    /** The raw elements, C order. */
    readonly data: Uint8Array,
  ) {}
}

/** What the unpickler can return. */
export type PickleValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | NdArray
  | PickleValue[]
  | PickleTuple
  | Map<PickleValue, PickleValue>;

/** A pickled tuple (a frozen array, tagged so lists and tuples stay distinct). */
export class PickleTuple extends Array<PickleValue> {}

/** A tuple while unpickling: may still hold globals, dtypes and pending arrays. */
class RawTuple {
  constructor(readonly items: StackItem[]) {}
}

/** A reference to one of the whitelisted globals. */
class GlobalRef {
  constructor(readonly module: string, readonly name: string) {}
  get qualname(): string { return `${this.module}.${this.name}`; }
}

/** numpy.dtype under construction (dtype('u1', False, True) then BUILD(state)). */
class DType {
  constructor(readonly code: 'u1' | 'b1') {}
}

/** ndarray from _reconstruct(ndarray, (0,), b'b'), filled by BUILD(state). */
class PendingArray {
  result: NdArray | null = null;
}

const MARK = Symbol('mark');
type StackItem = null | boolean | number | bigint | string | Uint8Array | NdArray | RawTuple | StackItem[] | Map<StackItem, StackItem> | GlobalRef | DType | PendingArray | typeof MARK;

const ALLOWED_GLOBALS = new Set([
  'numpy.core.multiarray._reconstruct',
  'numpy._core.multiarray._reconstruct',
  'numpy.ndarray',
  'numpy.dtype',
  'numpy.core.numeric._frombuffer',
  'numpy._core.numeric._frombuffer',
  '_codecs.encode',
]);

const DTYPE_CODES: Record<string, 'u1' | 'b1'> = {
  u1: 'u1', '|u1': 'u1', uint8: 'u1', B: 'u1',
  b1: 'b1', '|b1': 'b1', bool: 'b1', '?': 'b1',
};

const OPNAMES: Record<number, string> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT',
  0x4a: 'BININT', 0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID',
  0x51: 'BINPERSID', 0x52: 'REDUCE', 0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING',
  0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND', 0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT',
  0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET', 0x69: 'INST', 0x6a: 'LONG_BINGET',
  0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT', 0x72: 'LONG_BINPUT',
  0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT',
  0x80: 'PROTO', 0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2',
  0x87: 'TUPLE3', 0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4',
  0x42: 'BINBYTES', 0x43: 'SHORT_BINBYTES', 0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8',
  0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS', 0x91: 'FROZENSET', 0x92: 'NEWOBJ_EX',
  0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME', 0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER',
  0x98: 'READONLY_BUFFER',
};

export interface UnpickleOptions {
  /** Name used in error messages (e.g. the file path). */
  source?: string;
  /** Refuse more than this many memo entries / stack items (default 50M). */
  maxItems?: number;
}

function describe(v: StackItem): string {
  if (v === MARK) return 'MARK';
  if (v === null) return 'None';
  if (v instanceof GlobalRef) return `global ${v.qualname}`;
  if (v instanceof DType) return `numpy.dtype(${v.code})`;
  if (v instanceof PendingArray || v instanceof NdArray) return 'numpy.ndarray';
  if (v instanceof Uint8Array) return `bytes[${v.length}]`;
  if (v instanceof RawTuple) return `tuple[${v.items.length}]`;
  if (Array.isArray(v)) return `list[${v.length}]`;
  if (v instanceof Map) return 'dict';
  return typeof v;
}

/**
 * Unpickles `buf` (protocols 2-5) under the restrictions described in the
 * module comment. Never executes anything; throws E_FORMAT on anything
 * outside the whitelist, on truncated or malformed input.
 */
export function safeUnpickle(buf: Uint8Array, options: UnpickleOptions = {}): PickleValue {
  const src = options.source ?? 'pickle';
  const maxItems = options.maxItems ?? 50_000_000;
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const metastack: StackItem[][] = [];
  const memo = new Map<number, StackItem>();
  let pos = 0;
  let cur: StackItem[] = [];
  let opPos = 0;
  let opName = '';

  const fail = (what: string): never => {
    throw new QuantFaceError('E_FORMAT', `${src}: not a supported insightface .bin pickle: ${what} (opcode ${opName || '?'} at byte ${opPos}). Only pickles of lists of JPEG bytes / numpy uint8 arrays and bool lists are read; nothing in a pickle is ever executed.`);
  };
  const need = (n: number) => { if (n < 0 || pos + n > buf.length) fail(`truncated: ${n} more bytes needed at byte ${pos}, the data has ${buf.length}`); };
  const u8 = () => { need(1); return buf[pos++]!; };
  const u16 = () => { need(2); const v = dv.getUint16(pos, true); pos += 2; return v; };
  const u32 = () => { need(4); const v = dv.getUint32(pos, true); pos += 4; return v; };
  const i32 = () => { need(4); const v = dv.getInt32(pos, true); pos += 4; return v; };
  const u64 = () => {
    need(8);
    const v = dv.getBigUint64(pos, true); pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`length ${v} too large`);
    return Number(v);
  };
  const bytes = (n: number) => { need(n); const b = buf.slice(pos, pos + n); pos += n; return b; };
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const latin1 = new TextDecoder('latin1');
  const text = (n: number) => {
    need(n);
    let s = '';
    try { s = utf8.decode(buf.subarray(pos, pos + n)); } catch { fail('invalid UTF-8 in a string'); }
    pos += n;
    return s;
  };
  const line = () => {
    const end = buf.indexOf(0x0a, pos);
    if (end < 0) fail('truncated: unterminated text line');
    const s = latin1.decode(buf.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const push = (v: StackItem) => {
    if (cur.length >= maxItems) fail('too many stack items');
    cur.push(v);
  };
  const pop = (): StackItem => {
    if (cur.length === 0) fail('stack underflow');
    return cur.pop()!;
  };
  const popMark = (): StackItem[] => {
    const items = cur;
    if (metastack.length === 0) fail('no MARK on the stack');
    cur = metastack.pop()!;
    return items;
  };
  const top = (): StackItem => { if (cur.length === 0) fail('stack underflow'); return cur[cur.length - 1]!; };
  const plain = (v: StackItem, what: string): StackItem => {
    if (v === MARK) fail(`MARK used as ${what}`);
    return v;
  };
  const memoPut = (idx: number) => {
    if (memo.size >= maxItems) fail('too many memo entries');
    memo.set(idx, top());
  };
  const asDtype = (v: StackItem | undefined): 'u1' | 'b1' => {
    if (v instanceof DType) return v.code;
    return fail(`expected a numpy dtype, got ${describe(v ?? null)}`);
  };
  const asShape = (v: StackItem | undefined): number[] => {
    if (!(v instanceof RawTuple)) return fail('array shape is not a tuple');
    return v.items.map((d) => {
      const n = typeof d === 'bigint' ? Number(d) : d;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) fail('array shape holds a non-integer');
      return n as number;
    });
  };
  const asString = (v: StackItem | undefined): string => {
    if (typeof v === 'string') return v;
    if (v instanceof Uint8Array) return latin1.decode(v);
    return fail(`expected a string, got ${describe(v ?? null)}`);
  };
  const latin1Bytes = (s: string, what: string): Uint8Array => {
    const out = new Uint8Array(s.length);
    for (let k = 0; k < s.length; k++) {
      const c = s.charCodeAt(k);
      if (c > 255) fail(`${what} holds a character above 255`);
      out[k] = c;
    }
    return out;
  };
  const makeArray = (dtype: 'u1' | 'b1', shape: number[], raw: Uint8Array): NdArray => {
    const count = shape.reduce((a, b) => a * b, 1);
    if (raw.length !== count) fail(`numpy array data holds ${raw.length} bytes but shape [${shape.join(', ')}] needs ${count}`);
    return new NdArray(dtype, shape, raw);
  };

  const callGlobal = (g: GlobalRef, argsItem: StackItem): StackItem => {
    if (!(argsItem instanceof RawTuple)) return fail(`arguments of ${g.qualname} are not a tuple`);
    const args = argsItem.items;
    switch (g.qualname) {
      case 'numpy.core.multiarray._reconstruct':
      case 'numpy._core.multiarray._reconstruct': {
        // _reconstruct(ndarray, (0,), b'b'): an empty array whose state BUILD sets
        const cls = args[0];
        if (!(cls instanceof GlobalRef) || cls.qualname !== 'numpy.ndarray') fail('_reconstruct of something other than numpy.ndarray');
        return new PendingArray();
      }
      case 'numpy.dtype': {
        const spec = asString(args[0]);
        const code = DTYPE_CODES[spec];
        if (!code) fail(`numpy dtype '${spec}' is not supported (only uint8 images and bool labels are)`);
        return new DType(code!);
      }
      case 'numpy.core.numeric._frombuffer':
      case 'numpy._core.numeric._frombuffer': {
        // _frombuffer(buffer, dtype, shape, order)
        const b = args[0];
        if (!(b instanceof Uint8Array)) fail('_frombuffer without an in-band byte buffer');
        const dtype = asDtype(args[1]);
        const shape = asShape(args[2]);
        const order = args[3] === undefined ? 'C' : asString(args[3]);
        if (order !== 'C' && order !== 'F') fail(`array order '${order}'`);
        if (order === 'F' && shape.filter((d) => d > 1).length > 1) fail('Fortran-ordered multi-dimensional arrays are not supported');
        return makeArray(dtype, shape, b as Uint8Array);
      }
      case '_codecs.encode': {
        // protocol 2 from Python 3 writes bytes as _codecs.encode(str, 'latin1')
        const s = args[0], enc = args[1];
        if (typeof s !== 'string' || (enc !== 'latin1' && enc !== 'latin-1' && enc !== 'iso-8859-1')) fail('_codecs.encode other than (str, "latin1")');
        return latin1Bytes(s as string, 'latin1-encoded bytes');
      }
      default:
        return fail(`call of ${g.qualname}`);
    }
  };

  const build = (obj: StackItem, state: StackItem): void => {
    if (obj instanceof DType) {
      // (3, '|', None, None, None, -1, -1, 0[, ...]): a plain 1-byte dtype
      if (!(state instanceof RawTuple) || state.items.length < 8) return fail('unexpected numpy dtype state');
      const st = state.items;
      if (st[2] !== null || st[3] !== null || st[4] !== null) fail('structured numpy dtypes are not supported');
      const elsize = st[5], align = st[6];
      if ((elsize !== -1 && elsize !== 1) || (align !== -1 && align !== 1)) fail('unexpected numpy dtype element size');
      return;
    }
    if (obj instanceof PendingArray) {
      // (version, shape, dtype, is_fortran, rawdata)
      if (!(state instanceof RawTuple)) return fail('unexpected numpy array state');
      if (obj.result) fail('numpy array state set twice');
      const st = state.items;
      if (st.length !== 5 && st.length !== 4) fail('unexpected numpy array state length');
      const off = st.length === 5 ? 1 : 0;
      const shape = asShape(st[off]);
      const dtype = asDtype(st[off + 1]);
      const fortran = st[off + 2];
      const raw = st[off + 3];
      if (fortran === true && shape.filter((d) => d > 1).length > 1) fail('Fortran-ordered multi-dimensional arrays are not supported');
      let data: Uint8Array;
      if (raw instanceof Uint8Array) data = raw;
      else if (typeof raw === 'string') data = latin1Bytes(raw, 'array data string');
      else return fail('numpy array data is not bytes (object arrays are not supported)');
      obj.result = makeArray(dtype, shape, data);
      return;
    }
    return fail(`BUILD on ${describe(obj)}`);
  };

  /** Converts the result to plain values; refuses what is left of globals/dtypes. */
  const finalize = (root: StackItem): PickleValue => {
    const seen = new Map<object, PickleValue>();
    const active = new Set<object>();
    const conv = (v: StackItem, depth: number): PickleValue => {
      if (depth > 1000) fail('nesting too deep');
      if (v === MARK) return fail('MARK in the result');
      if (v instanceof GlobalRef || v instanceof DType) return fail(`${describe(v)} in the result`);
      if (v instanceof PendingArray) return v.result ?? fail('numpy array without state in the result');
      if (v === null || typeof v !== 'object' || v instanceof Uint8Array || v instanceof NdArray) return v as PickleValue;
      const hit = seen.get(v);
      if (hit !== undefined) return hit;
      if (active.has(v)) fail('recursive structures are not supported');
      active.add(v);
      let out: PickleValue;
      if (v instanceof RawTuple) {
        const t = new PickleTuple();
        for (const x of v.items) t.push(conv(x, depth + 1));
        out = Object.freeze(t) as PickleTuple;
      } else if (Array.isArray(v)) {
        out = v.map((x) => conv(x, depth + 1));
      } else {
        const m = new Map<PickleValue, PickleValue>();
        for (const [k, x] of v) m.set(conv(k, depth + 1), conv(x, depth + 1));
        out = m;
      }
      active.delete(v);
      seen.set(v, out);
      return out;
    };
    return conv(root, 0);
  };

  for (;;) {
    opPos = pos;
    if (pos >= buf.length) { opName = ''; fail('truncated: no STOP opcode'); }
    const op = buf[pos++]!;
    opName = OPNAMES[op] ?? `0x${op.toString(16).padStart(2, '0')}`;
    switch (op) {
      case 0x80: { // PROTO
        const p = u8();
        if (p < 2 || p > 5) fail(`pickle protocol ${p} (2 to 5 are supported)`);
        break;
      }
      case 0x95: u64(); break; // FRAME: only a length; frames need no special handling
      case 0x2e: { // STOP
        const v = pop();
        if (metastack.length) fail('MARK without its closing opcode');
        return finalize(v);
      }
      case 0x28: metastack.push(cur); cur = []; break; // MARK
      case 0x30: if (cur.length) pop(); else popMark(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: push(top()); break; // DUP
      case 0x4e: push(null); break; // NONE
      case 0x88: push(true); break; // NEWTRUE
      case 0x89: push(false); break; // NEWFALSE
      case 0x4a: push(i32()); break; // BININT
      case 0x4b: push(u8()); break; // BININT1
      case 0x4d: push(u16()); break; // BININT2
      case 0x8a: { // LONG1
        const n = u8();
        const b = bytes(n);
        let v = 0n;
        for (let k = n - 1; k >= 0; k--) v = (v << 8n) | BigInt(b[k]!);
        if (n > 0 && b[n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x47: { need(8); const v = dv.getFloat64(pos, false); pos += 8; push(v); break; } // BINFLOAT
      case 0x58: push(text(u32())); break; // BINUNICODE
      case 0x8c: push(text(u8())); break; // SHORT_BINUNICODE
      case 0x8d: push(text(u64())); break; // BINUNICODE8
      case 0x54: { const n = i32(); if (n < 0) fail('negative BINSTRING length'); push(bytes(n)); break; } // BINSTRING (py2 str read as bytes)
      case 0x55: push(bytes(u8())); break; // SHORT_BINSTRING
      case 0x42: push(bytes(u32())); break; // BINBYTES
      case 0x43: push(bytes(u8())); break; // SHORT_BINBYTES
      case 0x8e: push(bytes(u64())); break; // BINBYTES8
      case 0x96: push(bytes(u64())); break; // BYTEARRAY8
      case 0x5d: push([]); break; // EMPTY_LIST
      case 0x29: push(new RawTuple([])); break; // EMPTY_TUPLE
      case 0x7d: push(new Map()); break; // EMPTY_DICT
      case 0x6c: push(popMark()); break; // LIST
      case 0x74: push(new RawTuple(popMark())); break; // TUPLE
      case 0x85: { const a = plain(pop(), 'a tuple item'); push(new RawTuple([a])); break; } // TUPLE1
      case 0x86: { const b = plain(pop(), 'a tuple item'); const a = plain(pop(), 'a tuple item'); push(new RawTuple([a, b])); break; } // TUPLE2
      case 0x87: { // TUPLE3
        const c = plain(pop(), 'a tuple item'); const b = plain(pop(), 'a tuple item'); const a = plain(pop(), 'a tuple item');
        push(new RawTuple([a, b, c]));
        break;
      }
      case 0x61: { // APPEND
        const v = plain(pop(), 'a list item');
        const l = top();
        if (!Array.isArray(l)) fail(`APPEND to ${describe(l)}`);
        if ((l as StackItem[]).length >= maxItems) fail('list too long');
        (l as StackItem[]).push(v);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        const l = top();
        if (!Array.isArray(l)) fail(`APPENDS to ${describe(l)}`);
        if ((l as StackItem[]).length + items.length > maxItems) fail('list too long');
        for (const v of items) (l as StackItem[]).push(v);
        break;
      }
      case 0x73: { // SETITEM
        const v = plain(pop(), 'a value'); const k = plain(pop(), 'a key'); const d = top();
        if (!(d instanceof Map)) fail(`SETITEM on ${describe(d)}`);
        (d as Map<StackItem, StackItem>).set(k, v);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark(); const d = top();
        if (!(d instanceof Map) || items.length % 2) fail(`SETITEMS on ${describe(d)}`);
        for (let k = 0; k < items.length; k += 2) (d as Map<StackItem, StackItem>).set(items[k]!, items[k + 1]!);
        break;
      }
      case 0x64: { // DICT
        const items = popMark();
        if (items.length % 2) fail('odd number of DICT items');
        const d = new Map<StackItem, StackItem>();
        for (let k = 0; k < items.length; k += 2) d.set(items[k]!, items[k + 1]!);
        push(d);
        break;
      }
      case 0x71: memoPut(u8()); break; // BINPUT
      case 0x72: memoPut(u32()); break; // LONG_BINPUT
      case 0x94: memoPut(memo.size); break; // MEMOIZE
      case 0x68: case 0x6a: { // BINGET, LONG_BINGET
        const idx = op === 0x68 ? u8() : u32();
        if (!memo.has(idx)) fail(`memo entry ${idx} does not exist`);
        push(memo.get(idx)!);
        break;
      }
      case 0x63: { // GLOBAL
        const mod = line();
        const name = line();
        const q = `${mod}.${name}`;
        if (!ALLOWED_GLOBALS.has(q)) fail(`global ${q} is not allowed`);
        push(new GlobalRef(mod, name));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop(); const mod = pop();
        if (typeof name !== 'string' || typeof mod !== 'string') fail('STACK_GLOBAL needs two strings');
        const q = `${mod as string}.${name as string}`;
        if (!ALLOWED_GLOBALS.has(q)) fail(`global ${q} is not allowed`);
        push(new GlobalRef(mod as string, name as string));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        const f = pop();
        if (!(f instanceof GlobalRef)) fail(`REDUCE of ${describe(f)} (only whitelisted numpy callables may be called)`);
        push(callGlobal(f as GlobalRef, args));
        break;
      }
      case 0x62: { // BUILD
        const state = pop();
        build(top(), state);
        break;
      }
      default:
        fail(`opcode ${opName} is not allowed`);
    }
  }
}
