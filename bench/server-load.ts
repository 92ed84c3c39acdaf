// npm run bench:server-load — load test of the example server on loopback.
//
//   flock -x /tmp/qf-cpu.lock node --import tsx bench/server-load.ts [--model file.qfm|model.json]
//       [--duration 10] [--connections 1,16] [--requests 10000] [--threads 2]
//
// 1. Builds a W8A8 post-training-quantized student of the mobileface teacher
//    (16 synthetic faces for calibration) and saves it as a .qfm, unless
//    --model is given; starts examples/server/main.ts on it in a child process
//    (its own event loop and native threads), align 'ffhq'.
// 2. autocannon POST /embed with a 256x256 JPEG face for --duration seconds at
//    each connection count: requests/s, latency p50 / p99, errors, non-2xx.
// 3. Exactly --requests requests at 16 connections while sampling the
//    server's RSS (/proc/<pid>/status) before, during and after: memory must
//    stay flat.
// 4. Malformed images, bodies over the limit and images over the pixel limit
//    get 4xx, and the server keeps answering (a last /embed and /health).
// Prints a table and writes bench/results/server-load-<time>.json.
//
// Faces mode (issue 15): `npm run bench:server-load -- --faces --model rec.qfm
//   [--int8 DIR] [--requests 10000]`: POST /faces and POST /verify with
//   640x480 photos of 3 faces through the face pipeline (see facesMain).
//
// Attack mode (issue 19): `npm run bench:server-load -- --attack [--seconds 30]
//   [--normal 4] [--heavy 2] [--slow 4] [--soak 10000] [--rss-cap-mb 4000]
//   [--server examples/server/main.ts] [--server-args '--max-inflight-bytes 1e8']`
// starts the server with its default limits (plus --server-args), then
// 1. the issue-19 request (32 x 6300x6300 black PNG in JSON), 8 at once;
// 2. normal traffic alone for 5 s (p50 / p99);
// 3. --seconds of hostile traffic (bench/lib/attack.ts: the most pixels per
//    request in PNG / JPEG / WebP, progressive, interlaced and EXIF-rotated
//    images, slow bodies and headers, truncated and malformed images,
//    oversized base64, nested and huge JSON) with normal traffic beside it:
//    peak RSS, normal p50 / p99, answers by code, errors;
// 4. --soak normal requests afterwards at 16 connections with RSS samples.
// A watchdog kills the server when its RSS passes --rss-cap-mb (for
// measuring an older server, e.g. --server tmp/before/examples/server/main.ts
// from `git archive <commit> lib examples | tar -x -C tmp/before`).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { request } from 'node:http';
import sharp from 'sharp';
import { packageRoot } from '../lib/binding.js';
import { saveQfm } from '../lib/io/index.js';
import { faceCrops, faceFiles, student, teacher, PER } from './lib/runtime-faces.js';
import { formatAttack, issue19, runAttack, type AttackReport } from './lib/attack.js';

// autocannon ships no types: the part of its API used here.
interface AcResult {
  requests: { total: number };
  duration: number;
  latency: { p50: number; p99: number };
  errors: number;
  timeouts: number;
  non2xx: number;
}
interface AcOptions {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: Buffer;
  connections: number;
  duration?: number;
  amount?: number;
  timeout?: number;
}
type AcInstance = Promise<AcResult> & { on(ev: 'response', f: () => void): void };
const autocannon = createRequire(import.meta.url)('autocannon') as (o: AcOptions) => AcInstance;

const argv = process.argv.slice(2);
const arg = (k: string, d: string): string => {
  const i = argv.indexOf(`--${k}`);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1]! : d;
};
const duration = Number(arg('duration', '10'));
const connList = arg('connections', '1,16').split(',').map(Number);
const total = Number(arg('requests', '10000'));
const threads = arg('threads', '2');

function rssKb(pid: number): number {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+)/.exec(s);
  return m ? Number(m[1]) : NaN;
}

async function startServer(model: string, extra = ['--max-pixels', '4000000', '--body-limit', String(4 << 20)], main = join(packageRoot, 'examples/server/main.ts')): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', main, '--model', model, '--port', '0', '--threads', threads, '--align', 'ffhq', ...extra], {
    cwd: packageRoot,
    // as `npm run serve:example` starts it (glibc returns freed image buffers to the system)
    env: { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '1048576', ...process.env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /on (http:\/\/[^\s:]+:\d+)/.exec(buf);
      if (m) resolve(m[1]!);
    });
    child.on('exit', (code) => reject(new Error(`server exited (${code}) before listening: ${buf}`)));
  });
  return { child, url };
}

interface Load {
  connections: number;
  requests: number;
  seconds: number;
  reqPerSec: number;
  p50: number;
  p99: number;
  errors: number;
  timeouts: number;
  non2xx: number;
}

/**
 * The flat-RSS run: `total` POSTs of `body` to `target` on 16 connections while the server's RSS is
 * sampled every `everyMs` (pushed onto `rss` with the requests answered so far); returns the run's figures.
 */
async function rssRun(pid: number, target: string, body: Buffer, total: number, everyMs: number, timeoutS: number, rss: { requests: number; rssMb: number }[]): Promise<Load> {
  rss.push({ requests: 0, rssMb: rssKb(pid) / 1024 });
  let done = 0;
  const timer = setInterval(() => rss.push({ requests: done, rssMb: rssKb(pid) / 1024 }), everyMs);
  const inst = autocannon({ url: target, method: 'POST', headers: { 'content-type': 'image/jpeg' }, body, connections: 16, amount: total, timeout: timeoutS });
  inst.on('response', () => {
    done++;
  });
  const r = await inst;
  clearInterval(timer);
  rss.push({ requests: total, rssMb: rssKb(pid) / 1024 });
  return { connections: 16, requests: r.requests.total, seconds: r.duration, reqPerSec: r.requests.total / r.duration, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors, timeouts: r.timeouts, non2xx: r.non2xx };
}

async function load(url: string, body: Buffer, connections: number, o: { duration?: number; amount?: number; path?: string; type?: string }): Promise<Load> {
  const r = await autocannon({
    url: `${url}${o.path ?? '/embed'}`,
    method: 'POST',
    headers: { 'content-type': o.type ?? 'image/jpeg' },
    body,
    connections,
    ...(o.amount ? { amount: o.amount } : { duration: o.duration ?? duration }),
    timeout: 30,
  });
  return {
    connections,
    requests: r.requests.total,
    seconds: r.duration,
    reqPerSec: r.requests.total / r.duration,
    p50: r.latency.p50,
    p99: r.latency.p99,
    errors: r.errors,
    timeouts: r.timeouts,
    non2xx: r.non2xx,
  };
}

/**
 * POST that reports the status even when the server answers before reading
 * the body (413 on the Content-Length) and closes the connection: the
 * headers go first and the body only if no answer came within 200 ms.
 */
function postRaw(url: string, payload: Buffer, type: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let status = 0;
    const req = request(url, { method: 'POST', headers: { 'content-type': type, 'content-length': payload.length } }, (res) => {
      status = res.statusCode ?? 0;
      res.resume();
      res.on('end', () => resolve(status));
      res.on('error', () => resolve(status));
    });
    req.on('error', (e) => (status ? resolve(status) : reject(e)));
    req.flushHeaders();
    setTimeout(() => {
      if (!status) req.end(payload);
      else req.destroy();
    }, 200);
  });
}

async function main(): Promise<void> {
  let model = arg('model', '');
  let tmp: string | undefined;
  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    if (!model) {
      tmp = mkdtempSync(join(tmpdir(), 'qf-load-'));
      const s = student(await teacher(), (await faceCrops(16)).subarray(0, 16 * PER));
      model = join(tmp, 'mobileface-w8a8.qfm');
      await saveQfm(s, model);
    }
    server = await startServer(model);
  } catch (e) {
    if (tmp) rmSync(tmp, { recursive: true, force: true }); // removed in the finally below once the server runs
    throw e;
  }
  const { child, url } = server;
  const pid = child.pid!;
  const body = readFileSync(faceFiles(1)[0]!);
  const report: { load: Load[]; rss: { requests: number; rssMb: number }[]; flat?: Load; bad: { what: string; status: number }[]; after: number[] } = { load: [], rss: [], bad: [], after: [] };
  try {
    await load(url, body, 4, { amount: 200 }); // warm up (plans for the batch sizes, JIT)
    for (const c of connList) {
      const r = await load(url, body, c, { duration });
      report.load.push(r);
      console.error(`${c} connection(s): ${r.reqPerSec.toFixed(0)} req/s, p50 ${r.p50} ms, p99 ${r.p99} ms, errors ${r.errors}, non-2xx ${r.non2xx}`);
    }
    // RSS over `total` requests
    report.flat = await rssRun(pid, `${url}/embed`, body, total, 500, 30, report.rss);
    // malformed and oversized inputs
    const big = await sharp({ create: { width: 2500, height: 2500, channels: 3, background: '#777' } }).png().toBuffer();
    const post = async (what: string, payload: Buffer, type = 'image/jpeg'): Promise<void> => {
      report.bad.push({ what, status: await postRaw(`${url}/embed`, payload, type) });
    };
    await post('garbage bytes', Buffer.from('this is not an image at all'));
    await post('truncated JPEG', body.subarray(0, body.length >> 1));
    await post('body over the 4 MiB limit', Buffer.alloc(5 << 20, 7));
    await post('image over the pixel limit (2500x2500)', big, 'image/png');
    await post('text/plain body', Buffer.from('hello'), 'text/plain');
    const ok = await fetch(`${url}/embed`, { method: 'POST', body: new Uint8Array(body), headers: { 'content-type': 'image/jpeg' } });
    const health = await fetch(`${url}/health`);
    report.after = [ok.status, health.status];
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
  console.log(`\n## example server load test (${url}, model ${model.includes('qfm-load') || model.includes('qf-load') ? 'mobileface W8A8 PTQ .qfm' : model}, server threads ${threads}, loopback, autocannon in this process)\n`);
  console.log('| connections | duration s | requests | req/s | p50 ms | p99 ms | errors | timeouts | non-2xx |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of [...report.load, ...(report.flat ? [report.flat] : [])])
    console.log(`| ${r.connections} | ${r.seconds.toFixed(1)} | ${r.requests} | ${r.reqPerSec.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.errors} | ${r.timeouts} | ${r.non2xx} |`);
  finishReport(report, total, 'requests', '/embed', 'server-load');
}

/** The RSS summary, the bad requests' answers and the results file, shared by the /embed and /faces runs; exits. */
function finishReport(
  report: { rss: Array<{ requests: number; rssMb: number }>; bad: Array<{ what: string; status: unknown }>; after: unknown[] },
  total: number, what: string, route: string, prefix: string,
): never {
  const rs = report.rss;
  const lastQ = rs.filter((x) => x.requests >= total * 0.75);
  const q1 = rs.filter((x) => x.requests >= total * 0.25);
  console.log(`\nRSS over ${total} ${what} at 16 connections: start ${rs[0]!.rssMb.toFixed(1)} MB, peak ${Math.max(...rs.map((x) => x.rssMb)).toFixed(1)} MB, after 25% ${q1[0]?.rssMb.toFixed(1)} MB, last quarter ${Math.min(...lastQ.map((x) => x.rssMb)).toFixed(1)}..${Math.max(...lastQ.map((x) => x.rssMb)).toFixed(1)} MB, end ${rs[rs.length - 1]!.rssMb.toFixed(1)} MB (${rs.length} samples)`);
  console.log('\nBad requests:');
  for (const b of report.bad) console.log(`- ${b.what}: HTTP ${b.status}`);
  console.log(`- afterwards: POST ${route} ${report.after[0]}, GET /health ${report.after[1]}`);
  const dir = join(packageRoot, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${prefix}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(report, null, 1));
  console.log(`\nresults: ${file}`);
  process.exit(0);
}

async function buildModel(): Promise<{ model: string; tmp?: string }> {
  const given = arg('model', '');
  if (given) return { model: given };
  const tmp = mkdtempSync(join(tmpdir(), 'qf-load-'));
  const s = student(await teacher(), (await faceCrops(16)).subarray(0, 16 * PER));
  const model = join(tmp, 'mobileface-w8a8.qfm');
  await saveQfm(s, model);
  return { model, tmp };
}

async function attackMain(): Promise<void> {
  const seconds = Number(arg('seconds', '30'));
  const soak = Number(arg('soak', '10000'));
  const capMb = Number(arg('rss-cap-mb', '4000'));
  const mainPath = resolve(packageRoot, arg('server', 'examples/server/main.ts'));
  const extra = arg('server-args', '').split(/\s+/).filter(Boolean);
  const { model, tmp } = await buildModel();
  const face = readFileSync(faceFiles(1)[0]!);
  const log = (x: string): void => console.error(x);
  const out: { server: string; extra: string[]; issue19?: unknown; alone?: Load; attack?: AttackReport; soak?: { requests: number; rss: number[]; load?: Load } } = { server: mainPath, extra };
  const restart = async (): Promise<Awaited<ReturnType<typeof startServer>>> => startServer(model, extra, mainPath);
  let srv = await restart();
  try {
    await load(srv.url, face, 4, { amount: 100 }); // warm up
    // 1. the issue's request, 8 at once
    const i19 = await issue19(srv.url, srv.child.pid!, 8, capMb, log);
    out.issue19 = i19;
    log(`issue 19 (8 x 32 x 6300^2 PNG at once): ${JSON.stringify(i19)}`);
    if (!i19.alive) {
      if (srv.child.exitCode === null && srv.child.signalCode === null) await new Promise((r) => srv.child.once('exit', r));
      log('restarting the server after the issue-19 request');
      srv = await restart();
      await load(srv.url, face, 4, { amount: 100 });
    }
    // 2. normal traffic alone
    const alone = await load(srv.url, face, 4, { duration: 5 });
    out.alone = alone;
    log(`normal traffic alone (4 connections, 5 s): p50 ${alone.p50} ms, p99 ${alone.p99} ms, ${alone.reqPerSec.toFixed(0)} req/s`);
    // 3. the attack with normal traffic
    const r = await runAttack({ url: srv.url, pid: srv.child.pid!, maxPixels: 40_000_000, maxRequestPixels: 200_000_000, maxImages: 32, bodyLimit: 8 << 20, seconds, heavyWorkers: Number(arg('heavy', '2')), normalClients: Number(arg('normal', '4')), slowSockets: Number(arg('slow', '4')), face, rssCapMb: capMb, log });
    out.attack = r;
    // 4. soak
    if (r.alive && soak > 0) {
      const pid = srv.child.pid!;
      const rss = [rssKb(pid) / 1024];
      const timer = setInterval(() => rss.push(rssKb(pid) / 1024), 500);
      const l = await load(srv.url, face, 16, { amount: soak });
      clearInterval(timer);
      rss.push(rssKb(pid) / 1024);
      out.soak = { requests: soak, rss, load: l };
    }
  } finally {
    srv.child.kill('SIGTERM');
    await new Promise((r) => (srv.child.exitCode !== null || srv.child.signalCode !== null ? r(null) : srv.child.once('exit', r)));
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
  console.log(`\n## attack on the example server (${out.server}${extra.length ? ' ' + extra.join(' ') : ''}; model ${tmp ? 'mobileface W8A8 PTQ .qfm' : model}; server threads ${threads}; clients in this process)\n`);
  const i = out.issue19 as Awaited<ReturnType<typeof issue19>>;
  console.log(`issue 19 request (32 x 6300x6300 black PNG, 4.9 MB JSON), 8 at once: answers ${JSON.stringify(i.answers)} in ${i.seconds.toFixed(1)} s; server peak RSS ${i.peakMb.toFixed(0)} MB; alive ${i.alive}${i.killedByWatchdog ? ` (killed by the watchdog at ${capMb} MB)` : ''}; /health after ${i.healthAfter || 'no answer'}`);
  if (out.alone) console.log(`normal traffic alone: 4 connections, p50 ${out.alone.p50} ms, p99 ${out.alone.p99} ms, ${out.alone.reqPerSec.toFixed(0)} req/s`);
  if (out.attack) console.log(`\n${seconds} s of attack:\n${formatAttack(out.attack)}`);
  if (out.soak) {
    const s = out.soak.rss;
    console.log(`\nsoak after the attack: ${out.soak.requests} requests at 16 connections (${out.soak.load!.reqPerSec.toFixed(0)} req/s, non-2xx ${out.soak.load!.non2xx}, errors ${out.soak.load!.errors}); RSS start ${s[0]!.toFixed(0)} MB, min ${Math.min(...s).toFixed(0)}, max ${Math.max(...s).toFixed(0)}, end ${s[s.length - 1]!.toFixed(0)} MB (${s.length} samples)`);
  }
  const dir = join(packageRoot, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `server-attack-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(out, null, 1));
  console.log(`\nresults: ${file}`);
  process.exit(0);
}

/**
 * --faces: the server with a face pipeline (--faces; --int8 DIR gives it
 * DIR/detector.qfm and DIR/landmarks.qfm; --model is the recogniser, e.g.
 * an int8 fr_feature student). POST /faces with a 640x480 JPEG of 3 LFW
 * faces and POST /verify with two such photos (JSON, base64), at each
 * connection count; RSS over --requests /faces requests; bad photos.
 */
async function facesMain(): Promise<void> {
  const model = arg('model', '');
  if (!model) throw new Error('--faces needs --model (the recogniser, e.g. a W8A8 fr_feature student .qfm)');
  const int8 = arg('int8', '');
  const extra = ['--max-pixels', '4000000', '--body-limit', String(4 << 20), '--faces', ...(int8 ? ['--detector', join(int8, 'detector.qfm'), '--landmark-model', join(int8, 'landmarks.qfm')] : [])];
  const lfw = join(packageRoot, '..', 'shared', 'data', 'lfw');
  const { readdirSync } = await import('node:fs');
  const people = readdirSync(lfw).filter((d) => !d.includes('.')).sort();
  const photo = async (k: number): Promise<Buffer> => {
    const parts = [];
    for (let i = 0; i < 3; i++) {
      const who = people[((k * 3 + i) * 7919) % people.length]!;
      const f = join(lfw, who, readdirSync(join(lfw, who)).find((x) => x.endsWith('.jpg'))!);
      parts.push({ input: await sharp(f).extract({ left: 45, top: 45, width: 160, height: 160 }).resize(170, 170).toBuffer(), left: 20 + i * 200, top: 150 });
    }
    return sharp({ create: { width: 640, height: 480, channels: 3, background: { r: 120, g: 130, b: 125 } } }).composite(parts).jpeg({ quality: 90 }).toBuffer();
  };
  const [pa, pb] = [await photo(0), await photo(1)];
  const verifyBody = Buffer.from(JSON.stringify({ a: pa.toString('base64'), b: pb.toString('base64') }));
  const srv = await startServer(model, extra);
  const { child, url } = srv;
  const pid = child.pid!;
  const report: { model: string; int8: string; load: Array<Load & { path: string }>; rss: { requests: number; rssMb: number }[]; flat?: Load; bad: { what: string; status: number }[]; after: number[] } = { model, int8, load: [], rss: [], bad: [], after: [] };
  try {
    const first = await fetch(`${url}/faces?embedding=0`, { method: 'POST', body: new Uint8Array(pa), headers: { 'content-type': 'image/jpeg' } });
    const js = (await first.json()) as { faces: unknown[] };
    console.error(`/faces on the test photo: HTTP ${first.status}, ${js.faces?.length} faces`);
    await load(url, pa, 4, { amount: 100, path: '/faces' });
    await load(url, verifyBody, 4, { amount: 50, path: '/verify', type: 'application/json' });
    for (const [path, body, type] of [['/faces', pa, 'image/jpeg'], ['/verify', verifyBody, 'application/json']] as const)
      for (const c of connList) {
        const r = await load(url, body, c, { duration, path, type });
        report.load.push({ ...r, path });
        console.error(`${path} ${c} connection(s): ${r.reqPerSec.toFixed(1)} req/s, p50 ${r.p50} ms, p99 ${r.p99} ms, errors ${r.errors}, non-2xx ${r.non2xx}`);
      }
    report.flat = await rssRun(pid, `${url}/faces`, pa, total, 1000, 60, report.rss);
    const big = await sharp({ create: { width: 2500, height: 2500, channels: 3, background: '#777' } }).png().toBuffer();
    const grey = await sharp({ create: { width: 320, height: 240, channels: 3, background: '#777' } }).jpeg().toBuffer();
    const post = async (what: string, path: string, payload: Buffer, type = 'image/jpeg'): Promise<void> => {
      report.bad.push({ what, status: await postRaw(`${url}${path}`, payload, type) });
    };
    await post('/faces garbage bytes', '/faces', Buffer.from('this is not an image at all'));
    await post('/faces truncated JPEG', '/faces', pa.subarray(0, pa.length >> 1));
    await post('/faces body over the 4 MiB limit', '/faces', Buffer.alloc(5 << 20, 7));
    await post('/faces photo over the pixel limit (2500x2500)', '/faces', big, 'image/png');
    await post('/faces text/plain body', '/faces', Buffer.from('hello'), 'text/plain');
    await post('/faces photo without a face (200, no faces)', '/faces', grey);
    await post('/verify photo without a face', '/verify', Buffer.from(JSON.stringify({ a: pa.toString('base64'), b: grey.toString('base64') })), 'application/json');
    await post('/verify truncated JPEG', '/verify', Buffer.from(JSON.stringify({ a: pa.toString('base64'), b: pb.subarray(0, pb.length >> 1).toString('base64') })), 'application/json');
    await post('/verify one photo only', '/verify', Buffer.from(JSON.stringify({ a: pa.toString('base64') })), 'application/json');
    const ok = await fetch(`${url}/faces`, { method: 'POST', body: new Uint8Array(pa), headers: { 'content-type': 'image/jpeg' } });
    const health = await fetch(`${url}/health`);
    report.after = [ok.status, health.status];
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
  console.log(`\n## example server with the face pipeline (${url}; recogniser ${model}; detector + landmarks ${int8 ? `int8 from ${int8}` : 'fp32 ONNX'}; server threads ${threads}; loopback, autocannon in this process; photos 640x480 JPEG with 3 faces)\n`);
  console.log('| route | connections | duration s | requests | req/s | p50 ms | p99 ms | errors | timeouts | non-2xx |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of [...report.load, ...(report.flat ? [{ ...report.flat, path: `/faces (${total})` }] : [])])
    console.log(`| ${r.path} | ${r.connections} | ${r.seconds.toFixed(1)} | ${r.requests} | ${r.reqPerSec.toFixed(1)} | ${r.p50} | ${r.p99} | ${r.errors} | ${r.timeouts} | ${r.non2xx} |`);
  finishReport(report, total, '/faces requests', '/faces', 'server-faces');
}

(argv.includes('--attack') ? attackMain() : argv.includes('--faces') ? facesMain() : main()).catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
