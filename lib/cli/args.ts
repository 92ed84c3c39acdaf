/** Option parsers shared by the CLI subcommands (commander `argParser`s). */
import { InvalidArgumentError } from 'commander';

/** An integer >= min ("--x must be an integer >= min."). */
export function intArg(name: string, min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}.`);
    return n;
  };
}

/** A finite number; with `sign`, also positive (> 0) or non-negative (>= 0). */
export function numberArg(name: string, sign?: 'positive' | 'non-negative') {
  return (v: string): number => {
    const n = Number(v);
    const ok = v.trim() !== '' && Number.isFinite(n) && (sign === undefined || n > 0 || (sign === 'non-negative' && n === 0));
    if (!ok) throw new InvalidArgumentError(`${name} must be a ${sign ? `${sign} ` : ''}number.`);
    return n;
  };
}
