/**
 * JSON-lines metric log: one object per line, each with the event name and
 * the wall-clock time. Lines are appended synchronously so that a crash
 * loses nothing that was logged before it; a resumed run appends to the
 * same file after a `resume` record.
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ioError } from '../errors.js';

export type LogRecord = { event: string } & Record<string, unknown>;

export class JsonLog {
  readonly path: string | null;

  constructor(path?: string | null) {
    this.path = path ? resolve(path) : null;
    if (this.path) {
      try {
        mkdirSync(dirname(this.path), { recursive: true });
        appendFileSync(this.path, '');
      } catch (e) {
        throw ioError(e, this.path, 'write');
      }
    }
  }

  write(rec: LogRecord): void {
    if (!this.path) return;
    const line = JSON.stringify({ time: new Date().toISOString(), ...rec }, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v));
    try {
      appendFileSync(this.path, line + '\n');
    } catch (e) {
      throw ioError(e, this.path, 'write');
    }
  }
}
