// Shared timing helpers of the kernel benchmarks.

/** Median of a list (the upper one of an even count). */
export const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

/** Seconds per call of fn: calls repeated until at least minSeconds have passed. */
export function secondsPerCall(fn: () => void, minSeconds: number): number {
  let iters = 0;
  const t0 = process.hrtime.bigint();
  let dt = 0;
  do {
    fn();
    iters++;
    dt = Number(process.hrtime.bigint() - t0) / 1e9;
  } while (dt < minSeconds);
  return dt / iters;
}

/** Median over reps of secondsPerCall, after one warm-up call. */
export function medianSecondsPerCall(fn: () => void, reps: number, minSeconds: number): number {
  fn();
  const times: number[] = [];
  for (let r = 0; r < reps; r++) times.push(secondsPerCall(fn, minSeconds));
  return median(times);
}
