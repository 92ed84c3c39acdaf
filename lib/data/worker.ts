/**
 * Entry point of a data worker thread (see pool.ts). Receives
 * `{ id, task }`, answers `{ id, ok, result }` or `{ id, ok: false, error }`.
 */
import { parentPort } from 'node:worker_threads';
import { handleTask, type DataTask } from './worker-core.js';

interface Envelope {
  id: number;
  task: DataTask | { type: '__throw'; message: string } | { type: '__exit'; code: number };
}

const port = parentPort;
if (!port) throw new Error('lib/data/worker is a worker_threads entry point; it cannot run on the main thread');

port.on('message', (msg: Envelope) => {
  const { id, task } = msg;
  // test hooks: an exception inside a task, and a worker that dies
  if (task.type === '__exit') process.exit(task.code);
  const run = task.type === '__throw' ? Promise.reject(new Error(task.message)) : handleTask(task);
  run.then(
    ({ result, transfer }) => port.postMessage({ id, ok: true, result }, transfer),
    (e: unknown) => {
      const err = e as { name?: string; message?: string; code?: unknown; stack?: string };
      port.postMessage({ id, ok: false, error: { name: err?.name, message: String(err?.message ?? e), code: typeof err?.code === 'string' ? err.code : undefined, stack: err?.stack } });
    },
  );
});
