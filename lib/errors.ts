/**
 * Library errors. Every failure that a user can cause (bad file, bad
 * argument, unsupported model) is a {@link QuantFaceError} with a stable
 * `code` and a message that says what went wrong and what to do about it.
 */

/** Stable error codes. Match on `code`, never on the message text. */
export type QuantFaceErrorCode =
  /** A tensor or array has the wrong shape or length. */
  | 'E_SHAPE'
  /** A file's content is not in the expected format (or is refused as unsafe). */
  | 'E_FORMAT'
  /** A model uses an operation that quantface does not implement. */
  | 'E_UNSUPPORTED_OP'
  /** A file is a recognised model format that quantface does not import (TFLite, TF.js layers models); the message says how to convert it. */
  | 'E_UNSUPPORTED_FORMAT'
  /** A file or folder could not be read or written. */
  | 'E_IO'
  /** CUDA was asked for but is not available on this machine. */
  | 'E_CUDA_UNAVAILABLE'
  /** A CUDA or cuBLASLt call failed (the message names it); thrown by the binding's CUDA exports. */
  | 'E_CUDA'
  /** Device memory is exhausted; thrown by the binding's CUDA exports. */
  | 'E_CUDA_OOM'
  /** A DeviceBuffer was used after free(); thrown by the binding's CUDA exports. */
  | 'E_CUDA_FREED'
  /** A user-supplied argument or option is invalid. */
  | 'E_ARG'
  /** A dataset holds no usable data (e.g. a folder without one readable image). */
  | 'E_DATA'
  /** An object (data loader, worker pool) was used after close(). */
  | 'E_CLOSED'
  /** The runtime's in-flight budget is full (too much work queued): retry later. */
  | 'E_BUSY'
  /** A photo holds no face where one is needed (the face pipeline's verify()). */
  | 'E_NO_FACE'
  /** An operation ran past its time limit (e.g. decoding one image) and was stopped. */
  | 'E_TIMEOUT'
  /** The native addon has no binary for this platform, or it would not load (the message says how to build it). */
  | 'E_NATIVE'
  /** An optional package that this feature needs is not installed (the message names it). */
  | 'E_DEPENDENCY'
  /** Something else went wrong inside quantface (a bug: please report it). */
  | 'E_INTERNAL';

export interface QuantFaceErrorOptions {
  /** The underlying error, if any. */
  cause?: unknown;
  /** A file path the error is about (included in the message by the caller). */
  path?: string;
}

export class QuantFaceError extends Error {
  readonly code: QuantFaceErrorCode;
  readonly path?: string;

  constructor(code: QuantFaceErrorCode, message: string, options: QuantFaceErrorOptions = {}) {
    super(message, options.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'QuantFaceError';
    this.code = code;
    if (options.path !== undefined) this.path = options.path;
  }
}

/** True when `e` is a QuantFaceError (optionally with the given code). */
export function isQuantFaceError(e: unknown, code?: QuantFaceErrorCode): e is QuantFaceError {
  return e instanceof QuantFaceError && (code === undefined || e.code === code);
}

/**
 * Wraps a Node.js fs error as E_IO with a message naming the path; passes
 * QuantFaceErrors through unchanged.
 */
export function ioError(e: unknown, path: string, what = 'read'): QuantFaceError {
  if (e instanceof QuantFaceError) return e;
  const err = e as NodeJS.ErrnoException;
  const reason = err && err.code === 'ENOENT' ? 'it does not exist'
    : err && err.code === 'EACCES' ? 'permission denied'
    : err && err.code === 'EISDIR' ? 'it is a folder, not a file'
    : String(err && err.message ? err.message : err);
  return new QuantFaceError('E_IO', `cannot ${what} ${path}: ${reason}. Check the path and its permissions.`, { cause: e, path });
}
