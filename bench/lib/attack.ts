// Hostile traffic against a running example server (examples/server), shared
// by `npm run bench:server-load -- --attack` and test/server-attack.test.ts:
// worst-case requests inside the limits (the most pixels per request in
// large PNG / JPEG / WebP, progressive and EXIF-rotated variants), the
// issue-19 request (32 x 6300x6300 black PNG), slow bodies and headers,
// truncated and malformed images, oversized base64, deeply nested and huge
// JSON, all at once with normal traffic, while the server's RSS is sampled.
import { request, Agent } from 'node:http';
import { connect, type Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import sharp from 'sharp';

export interface AttackConfig {
  url: string;
  pid: number;
  /** The server's limits the payloads are sized to (stay inside them). */
  maxPixels: number;
  maxRequestPixels: number;
  maxImages: number;
  bodyLimit: number;
  /** Seconds of attack. */
  seconds: number;
  /** Concurrent workers per heavy payload kind. */
  heavyWorkers: number;
  /** Normal clients (one face JPEG per request, sequential per client). */
  normalClients: number;
  /** Slow-body and slow-header sockets. */
  slowSockets: number;
  /** A face JPEG for normal traffic. */
  face: Buffer;
  /** Include the issue-19 request (32 x 6300x6300 black PNG in JSON). */
  issue19?: boolean;
  /** Stop (and report) when the server's RSS passes this many MB (a watchdog for old servers). */
  rssCapMb?: number;
  log?: (s: string) => void;
}

export interface Outcome {
  kind: string;
  status: number;
  code: string;
  ms: number;
}

export interface AttackReport {
  seconds: number;
  rss: { startMb: number; peakMb: number; endMb: number; hwmMb: number; samples: number };
  normal: { requests: number; ok: number; p50: number; p99: number; max: number; statuses: Record<string, number> };
  byKind: Record<string, Record<string, number>>;
  slow: { sockets: number; closedBySever: number; closeSeconds: number[]; answers: Record<string, number> };
  errors: Record<string, number>;
  alive: boolean;
  killedByWatchdog: boolean;
  healthAfter: number;
}

export function rssKb(pid: number, field = 'VmRSS'): number {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`${field}:\\s+(\\d+)`).exec(s);
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function percentile(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

/** POST; resolves with the status and the error code of the JSON answer (or the socket error's code). */
export function post(url: string, path: string, body: Buffer | string, type: string, agent?: Agent, timeoutMs = 120_000): Promise<{ status: number; code: string; ms: number; retryAfter?: string }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const payload = typeof body === 'string' ? Buffer.from(body) : body;
    let settled = false;
    const done = (r: { status: number; code: string; retryAfter?: string }): void => {
      if (settled) return;
      settled = true;
      resolve({ ...r, ms: performance.now() - t0 });
    };
    const req = request(`${url}${path}`, { method: 'POST', agent: agent ?? false, headers: { 'content-type': type, 'content-length': payload.length }, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        let code = res.statusCode === 200 ? 'ok' : `HTTP_${res.statusCode}`;
        try {
          const j = JSON.parse(Buffer.concat(chunks).toString()) as { code?: string };
          if (res.statusCode !== 200 && j.code) code = j.code;
        } catch {
          /* not JSON */
        }
        done({ status: res.statusCode ?? 0, code, ...(res.headers['retry-after'] ? { retryAfter: String(res.headers['retry-after']) } : {}) });
      });
      res.on('error', (e: NodeJS.ErrnoException) => done({ status: res.statusCode ?? 0, code: e.code ?? 'ERR' }));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('client timeout'), { code: 'CLIENT_TIMEOUT' })));
    req.on('error', (e: NodeJS.ErrnoException) => done({ status: 0, code: e.code ?? 'ERR' }));
    req.end(payload);
  });
}

export function get(url: string, path: string, timeoutMs = 30_000): Promise<number> {
  return new Promise((resolve) => {
    const req = request(`${url}${path}`, { agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

async function blackImage(side: number, format: 'png' | 'jpeg' | 'webp', o: { progressive?: boolean; orientation?: number } = {}): Promise<Buffer> {
  let p = sharp({ create: { width: side, height: side, channels: 3, background: { r: 0, g: 0, b: 0 } }, limitInputPixels: false });
  if (format === 'png') p = p.png({ compressionLevel: 9, ...(o.progressive ? { progressive: true } : {}) });
  else if (format === 'jpeg') p = p.jpeg({ quality: 80, ...(o.progressive ? { progressive: true } : {}) });
  else p = p.webp({ quality: 50, effort: 0 });
  if (o.orientation) p = p.withMetadata({ orientation: o.orientation });
  return p.toBuffer();
}

export interface Payload {
  kind: string;
  body: Buffer | string;
  type: string;
}

/** The hostile payloads for these limits. */
export async function payloads(c: AttackConfig): Promise<{ heavy: Payload[]; bad: Payload[] }> {
  const json = (imgs: Buffer[]): string => JSON.stringify({ images: imgs.map((b) => b.toString('base64')) });
  const heavy: Payload[] = [];
  // the most pixels per request: maxImages images of maxRequestPixels / maxImages pixels each (or fewer, larger ones)
  const perImage = Math.min(c.maxPixels, Math.floor(c.maxRequestPixels / c.maxImages));
  const sideMany = Math.floor(Math.sqrt(perImage));
  const sideBig = Math.floor(Math.sqrt(c.maxPixels));
  const nBig = Math.max(1, Math.min(c.maxImages, Math.floor(c.maxRequestPixels / (sideBig * sideBig))));
  for (const f of ['png', 'jpeg', 'webp'] as const) {
    const many = await blackImage(sideMany, f);
    const big = await blackImage(sideBig, f);
    const m = json(Array(c.maxImages).fill(many));
    if (m.length <= c.bodyLimit) heavy.push({ kind: `${f} ${c.maxImages} x ${sideMany}^2 (JSON)`, body: m, type: 'application/json' });
    const b = json(Array(nBig).fill(big));
    if (b.length <= c.bodyLimit) heavy.push({ kind: `${f} ${nBig} x ${sideBig}^2 (JSON)`, body: b, type: 'application/json' });
    if (big.length <= c.bodyLimit) heavy.push({ kind: `${f} ${sideBig}^2 (raw body)`, body: big, type: `image/${f}` });
  }
  heavy.push({ kind: `progressive JPEG ${sideBig}^2`, body: await blackImage(sideBig, 'jpeg', { progressive: true }), type: 'image/jpeg' });
  heavy.push({ kind: `interlaced PNG ${sideBig}^2`, body: await blackImage(sideBig, 'png', { progressive: true }), type: 'image/png' });
  heavy.push({ kind: `EXIF-rotated JPEG ${sideBig}^2`, body: await blackImage(sideBig, 'jpeg', { orientation: 6 }), type: 'image/jpeg' });
  if (c.issue19) {
    const b = await blackImage(6300, 'png');
    heavy.push({ kind: 'issue 19: 32 x 6300^2 black PNG (JSON)', body: json(Array(32).fill(b)), type: 'application/json' });
  }
  const png = await blackImage(1000, 'png');
  const face = c.face;
  const bad: Payload[] = [
    { kind: 'truncated JPEG', body: face.subarray(0, face.length >> 1), type: 'image/jpeg' },
    { kind: 'truncated PNG', body: (await sharp(face).png().toBuffer()).subarray(0, 3000), type: 'image/png' },
    { kind: 'PNG magic + garbage', body: Buffer.concat([png.subarray(0, 8), Buffer.alloc(5000, 0x41)]), type: 'image/png' },
    { kind: 'garbage bytes', body: Buffer.alloc(4096, 0x5a), type: 'application/octet-stream' },
    { kind: 'oversized base64 (over the body limit)', body: JSON.stringify({ image: 'A'.repeat(c.bodyLimit + 1024) }), type: 'application/json' },
    { kind: 'base64 of garbage', body: JSON.stringify({ image: Buffer.alloc(Math.floor(c.bodyLimit / 2), 0x41).toString('base64') }), type: 'application/json' },
    { kind: 'deeply nested JSON', body: '['.repeat(Math.floor(c.bodyLimit / 2)) + ']'.repeat(Math.floor(c.bodyLimit / 2)), type: 'application/json' },
    { kind: 'JSON with 1M values', body: JSON.stringify({ images: Array(Math.min(1_000_000, Math.floor(c.bodyLimit / 3))).fill(0) }), type: 'application/json' },
    { kind: 'malformed JSON', body: '{"images": ["', type: 'application/json' },
  ];
  return { heavy, bad };
}

/** A socket that sends headers and then its body (or headers) one byte every `everyMs`; resolves when the server closes it. */
function slowSocket(url: string, kind: 'body' | 'headers', everyMs: number, maxMs: number): Promise<{ closedByServer: boolean; seconds: number; answer: string }> {
  const u = new URL(url);
  const t0 = performance.now();
  return new Promise((resolve) => {
    const s: Socket = connect(Number(u.port), u.hostname);
    let answer = '';
    let timer: NodeJS.Timeout | undefined;
    let mine = false;
    const finish = (byServer: boolean): void => {
      clearInterval(timer);
      const m = /^HTTP\/1\.1 (\d+)/.exec(answer);
      resolve({ closedByServer: byServer, seconds: (performance.now() - t0) / 1000, answer: m ? m[1]! : 'no answer' });
    };
    s.on('data', (d: Buffer) => (answer += d.toString('latin1')));
    s.on('close', () => finish(!mine));
    s.on('error', () => undefined);
    s.on('connect', () => {
      const head = `POST /embed HTTP/1.1\r\nHost: ${u.host}\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n`;
      if (kind === 'body') s.write(head);
      let i = 0;
      timer = setInterval(() => {
        if (performance.now() - t0 > maxMs) {
          mine = true;
          s.destroy();
          return;
        }
        if (kind === 'headers') s.write(head[i++ % head.length]!);
        else s.write('x');
      }, everyMs);
    });
  });
}

export async function runAttack(c: AttackConfig): Promise<AttackReport> {
  const log = c.log ?? (() => undefined);
  const { heavy, bad } = await payloads(c);
  log(`payloads: ${heavy.map((p) => `${p.kind} ${(Buffer.byteLength(p.body) / 2 ** 20).toFixed(1)} MiB`).join('; ')}`);
  const rss: number[] = [];
  const startKb = rssKb(c.pid);
  let killed = false;
  const end = performance.now() + c.seconds * 1000;
  const running = (): boolean => performance.now() < end && !killed;
  const sampler = setInterval(() => {
    const kb = rssKb(c.pid);
    if (Number.isFinite(kb)) rss.push(kb);
    if (c.rssCapMb && kb / 1024 > c.rssCapMb && !killed) {
      killed = true;
      log(`watchdog: server RSS ${(kb / 1024).toFixed(0)} MB passed ${c.rssCapMb} MB: killing it`);
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }, 100);
  const byKind: Record<string, Record<string, number>> = {};
  const errors: Record<string, number> = {};
  const count = (kind: string, code: string, status: number): void => {
    byKind[kind] ??= {};
    byKind[kind]![code] = (byKind[kind]![code] ?? 0) + 1;
    if (status === 0 || (status >= 500 && status !== 503)) errors[`${kind}: ${code}`] = (errors[`${kind}: ${code}`] ?? 0) + 1;
  };
  const normalMs: number[] = [];
  const normalStatus: Record<string, number> = {};
  const workers: Promise<void>[] = [];
  for (const p of heavy) {
    for (let w = 0; w < c.heavyWorkers; w++) {
      workers.push(
        (async () => {
          while (running()) {
            const r = await post(c.url, '/embed', p.body, p.type);
            count(p.kind, r.code, r.status);
            if (r.status === 503 && r.retryAfter === undefined) count(p.kind, '503 without Retry-After', r.status);
            if (r.status === 0) await new Promise((res) => setTimeout(res, 50));
          }
        })(),
      );
    }
  }
  workers.push(
    (async () => {
      while (running()) {
        for (const p of bad) {
          if (!running()) break;
          const r = await post(c.url, '/embed', p.body, p.type);
          count(p.kind, r.code, r.status);
        }
      }
    })(),
  );
  for (let n = 0; n < c.normalClients; n++) {
    workers.push(
      (async () => {
        const agent = new Agent({ keepAlive: true, maxSockets: 1 });
        while (running()) {
          const r = await post(c.url, '/embed', c.face, 'image/jpeg', agent);
          normalStatus[r.code] = (normalStatus[r.code] ?? 0) + 1;
          if (r.status === 200) normalMs.push(r.ms);
          else if (r.status === 0) await new Promise((res) => setTimeout(res, 50));
        }
        agent.destroy();
      })(),
    );
  }
  const slow: Promise<{ closedByServer: boolean; seconds: number; answer: string }>[] = [];
  for (let i = 0; i < c.slowSockets; i++) slow.push(slowSocket(c.url, i % 2 ? 'headers' : 'body', 500, Math.max(c.seconds * 1000, 5_000) + 40_000));
  await Promise.all(workers);
  const slowRes = await Promise.all(slow);
  clearInterval(sampler);
  const hwm = rssKb(c.pid, 'VmHWM');
  const isAlive = !killed && alive(c.pid);
  const health = isAlive ? await get(c.url, '/health') : 0;
  const answers: Record<string, number> = {};
  for (const s of slowRes) answers[s.answer] = (answers[s.answer] ?? 0) + 1;
  return {
    seconds: c.seconds,
    rss: { startMb: startKb / 1024, peakMb: Math.max(...rss) / 1024, endMb: (rss[rss.length - 1] ?? NaN) / 1024, hwmMb: hwm / 1024, samples: rss.length },
    normal: { requests: Object.values(normalStatus).reduce((a, b) => a + b, 0), ok: normalMs.length, p50: percentile(normalMs, 50), p99: percentile(normalMs, 99), max: normalMs.length ? Math.max(...normalMs) : NaN, statuses: normalStatus },
    byKind,
    slow: { sockets: slowRes.length, closedBySever: slowRes.filter((s) => s.closedByServer).length, closeSeconds: slowRes.map((s) => Math.round(s.seconds * 10) / 10), answers },
    errors,
    alive: isAlive,
    killedByWatchdog: killed,
    healthAfter: health,
  };
}

export function formatAttack(r: AttackReport): string {
  const lines: string[] = [];
  lines.push(`server RSS: start ${r.rss.startMb.toFixed(0)} MB, peak ${r.rss.peakMb.toFixed(0)} MB (sampled every 100 ms, ${r.rss.samples} samples), VmHWM ${Number.isFinite(r.rss.hwmMb) ? r.rss.hwmMb.toFixed(0) + ' MB' : 'n/a (process gone)'}, end ${r.rss.endMb.toFixed(0)} MB`);
  lines.push(`process alive after the attack: ${r.alive}${r.killedByWatchdog ? ' (killed by the bench watchdog)' : ''}; GET /health after: ${r.healthAfter || 'no answer'}`);
  lines.push(`normal requests during the attack: ${r.normal.requests} (${r.normal.ok} ok), p50 ${r.normal.p50.toFixed(0)} ms, p99 ${r.normal.p99.toFixed(0)} ms, max ${r.normal.max.toFixed(0)} ms; answers ${JSON.stringify(r.normal.statuses)}`);
  lines.push(`slow sockets: ${r.slow.sockets}, closed by the server ${r.slow.closedBySever} after ${r.slow.closeSeconds.join(', ')} s; answers ${JSON.stringify(r.slow.answers)}`);
  lines.push('\n| attack request | answers by code |\n|---|---|');
  for (const [k, v] of Object.entries(r.byKind)) lines.push(`| ${k} | ${Object.entries(v).map(([c, n]) => `${c} ${n}`).join(', ')} |`);
  lines.push(`\nerrors (socket errors, client timeouts, 500s): ${Object.keys(r.errors).length ? JSON.stringify(r.errors) : 'none'}`);
  return lines.join('\n');
}

/**
 * The request of issue 19, `n` at once: { images: [32 x 6300x6300 black
 * PNG] } (4.9 MB of JSON each). Reports what each client got, the server's
 * peak RSS and whether it survived.
 */
export async function issue19(url: string, pid: number, n: number, rssCapMb?: number, log: (s: string) => void = () => undefined): Promise<{ answers: Record<string, number>; seconds: number; peakMb: number; alive: boolean; killedByWatchdog: boolean; healthAfter: number }> {
  const b = await blackImage(6300, 'png');
  const body = JSON.stringify({ images: Array(32).fill(b.toString('base64')) });
  log(`issue 19 request: ${(body.length / 2 ** 20).toFixed(1)} MiB of JSON, ${n} at once`);
  let peak = rssKb(pid);
  let killed = false;
  const sampler = setInterval(() => {
    const kb = rssKb(pid);
    if (Number.isFinite(kb)) peak = Math.max(peak, kb);
    if (rssCapMb && kb / 1024 > rssCapMb && !killed) {
      killed = true;
      log(`watchdog: server RSS ${(kb / 1024).toFixed(0)} MB passed ${rssCapMb} MB: killing it`);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }, 50);
  const t0 = performance.now();
  const res = await Promise.all(Array.from({ length: n }, () => post(url, '/embed', body, 'application/json')));
  const seconds = (performance.now() - t0) / 1000;
  clearInterval(sampler);
  const answers: Record<string, number> = {};
  for (const r of res) answers[`${r.status} ${r.code}`] = (answers[`${r.status} ${r.code}`] ?? 0) + 1;
  const isAlive = !killed && alive(pid);
  return { answers, seconds, peakMb: peak / 1024, alive: isAlive, killedByWatchdog: killed, healthAfter: isAlive ? await get(url, '/health') : 0 };
}
