/**
 * Evaluation reports: a JSON document, a plain-text table, and a
 * self-contained HTML page (inline SVG ROC curves, summary and per-fold
 * tables, models side by side; no scripts, no external assets).
 */
import { rename, writeFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ioError } from '../errors.js';
import type { ModelMeta } from './embedder.js';
import type { RocCurve, TarAtFar } from './roc.js';

export interface ReportModel {
  name: string;
  meta: ModelMeta;
  /** True when the preprocessing was assumed (no metadata file, unknown model). */
  metaAssumed: boolean;
  /** Verification sets (pairs / .bin). */
  accuracy?: number;
  std?: number;
  foldAccuracies?: number[];
  foldThresholds?: number[];
  val?: number;
  valStd?: number;
  far?: number;
  farTarget?: number;
  auc: number;
  tarAtFar: TarAtFar[];
  /** ROC points (FAR, TAR), thinned for plotting. */
  roc: { fpr: number[]; tpr: number[] };
  embedSeconds: number;
  imagesPerSecond: number;
}

export interface EvalReport {
  tool: 'quantface eval';
  version: string;
  created: string;
  dataset: {
    kind: 'pairs' | 'bin' | 'ijb';
    path: string;
    align: string;
    nPairs: number;
    nImages: number;
    nTemplates?: number;
    nPos: number;
    nNeg: number;
    limited?: boolean;
  };
  models: ReportModel[];
  seconds: number;
  /** A few aligned crops as the first model saw them (PNG, base64), shown in the HTML report. */
  samples?: Array<{ image: string; size: number; png: string }>;
}

/**
 * Thins a ROC for plotting on a log-FAR axis: keeps a point when it moves
 * at least `minStep` (in units of the virtual canvas: `width` per
 * [log10(minFar), 0] and `width` per TAR 0..1) from the last kept point.
 */
export function thinRoc(roc: Pick<RocCurve, 'fpr' | 'tpr'>, width = 2000, minStep = 1): { fpr: number[]; tpr: number[] } {
  const fpr: number[] = [], tpr: number[] = [];
  const n = roc.fpr.length;
  let minFar = 1;
  for (let k = 0; k < n; k++) if (roc.fpr[k]! > 0 && roc.fpr[k]! < minFar) minFar = roc.fpr[k]!;
  const lo = Math.log10(minFar) - 1e-9;
  const sx = (f: number) => (f > 0 ? ((Math.log10(f) - lo) / -lo) * width : -Infinity);
  let lx = NaN, ly = NaN;
  for (let k = 0; k < n; k++) {
    const f = roc.fpr[k]!, t = roc.tpr[k]!;
    if (!Number.isFinite(f) || !Number.isFinite(t)) continue;
    const x = sx(f), y = t * width;
    const last = k === n - 1;
    if (fpr.length === 0 || last || Math.abs(x - lx) >= minStep || Math.abs(y - ly) >= minStep || (x === -Infinity) !== (lx === -Infinity)) {
      fpr.push(f); tpr.push(t); lx = x; ly = y;
    }
  }
  return { fpr, tpr };
}

const pct = (v: number | undefined, digits = 2) => (v === undefined || !Number.isFinite(v) ? '-' : (100 * v).toFixed(digits));
const fmtFar = (f: number) => {
  const e = Math.round(Math.log10(f));
  return Math.abs(f - 10 ** e) < 1e-12 * 10 ** e ? `1e${e}` : String(f);
};

/**
 * Header of the drop column: teacher minus student accuracy in points, so a
 * positive number is accuracy lost (the README's tables read the same way).
 */
export const DROP_HEADER = 'drop pt (teacher-student)';

/** Accuracy drop of a model against the teacher in points (teacher minus model; positive = worse), '' for the teacher itself. */
export function dropPoints(m: Pick<ReportModel, 'accuracy'>, teacher: Pick<ReportModel, 'accuracy'> | undefined, isTeacher: boolean): string {
  if (isTeacher || m.accuracy === undefined || teacher?.accuracy === undefined) return '';
  const d = Number((100 * (teacher.accuracy - m.accuracy)).toFixed(2));
  return (d === 0 ? 0 : d).toFixed(2); // never '-0.00'
}

/** Plain-text summary table (teacher = first model; later rows show the drop, teacher minus student in points). */
export function formatTable(r: EvalReport): string {
  const fars = r.models[0]?.tarAtFar.map((t) => t.far) ?? [];
  const verif = r.models.some((m) => m.accuracy !== undefined);
  const head = ['model', ...(verif ? ['accuracy %', '+-', DROP_HEADER, `VAL@FAR=${fmtFar(r.models[0]?.farTarget ?? 1e-3)}`] : []), 'AUC %', ...fars.map((f) => `TAR@${fmtFar(f)}`), 'img/s'];
  const teacher = r.models[0];
  const rows = r.models.map((m, i) => [
    m.name,
    ...(verif ? [
      pct(m.accuracy, 2),
      pct(m.std, 2),
      dropPoints(m, teacher, i === 0),
      pct(m.val, 2),
    ] : []),
    pct(m.auc, 2),
    ...fars.map((f) => pct(m.tarAtFar.find((t) => t.far === f)?.tar, 2)),
    m.imagesPerSecond.toFixed(1),
  ]);
  const all = [head, ...rows];
  const w = head.map((_, c) => Math.max(...all.map((row) => row[c]!.length)));
  const line = (row: string[]) => row.map((s, c) => (c === 0 ? s.padEnd(w[c]!) : s.padStart(w[c]!))).join('  ');
  const ds = r.dataset;
  const title = `${ds.kind} ${ds.path}: ${ds.nPairs} pairs (${ds.nPos} genuine, ${ds.nNeg} impostor), ${ds.nImages} images${ds.nTemplates !== undefined ? `, ${ds.nTemplates} templates` : ''}, align ${ds.align}${ds.limited ? ' (limited subset)' : ''}`;
  return [title, line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n');
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]!));

/** Curve colours (first = teacher). */
export const CURVE_COLORS = ['#d62728', '#1f77b4', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
/** Fill of the ROC plot area (tests find the plot by this colour). */
export const PLOT_BACKGROUND = '#f4f6fb';

/** The ROC plot as an inline SVG (log FAR on x, TAR on y). */
export function rocSvg(models: Array<Pick<ReportModel, 'name' | 'roc'>>, width = 760, height = 480): string {
  const m = { l: 64, r: 16, t: 16, b: 52 };
  const pw = width - m.l - m.r, ph = height - m.t - m.b;
  let minFar = 1, minTar = 1;
  for (const md of models) {
    md.roc.fpr.forEach((f, k) => {
      if (f > 0) { minFar = Math.min(minFar, f); minTar = Math.min(minTar, md.roc.tpr[k]!); }
    });
  }
  const lo = Math.min(-1, Math.floor(Math.log10(minFar)));
  const yLo = Math.max(0, Math.floor(minTar * 10) / 10 - 0.05);
  const yHi = 1.02;
  const X = (f: number) => m.l + ((Math.log10(f) - lo) / -lo) * pw;
  const Y = (t: number) => m.t + (1 - (t - yLo) / (yHi - yLo)) * ph;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="ROC curves">`);
  parts.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
  parts.push(`<rect class="plot-area" x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="${PLOT_BACKGROUND}" stroke="#888" stroke-width="1"/>`);
  for (let e = lo; e <= 0; e++) {
    const x = X(10 ** e).toFixed(1);
    parts.push(`<line x1="${x}" y1="${m.t}" x2="${x}" y2="${m.t + ph}" stroke="#d5d9e3" stroke-width="1"/>`);
    parts.push(`<text x="${x}" y="${m.t + ph + 18}" font-size="12" text-anchor="middle" fill="#333">1e${e}</text>`);
  }
  for (let t = Math.ceil(yLo * 10) / 10; t <= 1.0001; t += 0.1) {
    const y = Y(t).toFixed(1);
    parts.push(`<line x1="${m.l}" y1="${y}" x2="${m.l + pw}" y2="${y}" stroke="#d5d9e3" stroke-width="1"/>`);
    parts.push(`<text x="${m.l - 6}" y="${(Y(t) + 4).toFixed(1)}" font-size="12" text-anchor="end" fill="#333">${t.toFixed(1)}</text>`);
  }
  parts.push(`<text x="${m.l + pw / 2}" y="${height - 10}" font-size="13" text-anchor="middle" fill="#222">False accept rate (FAR, log scale)</text>`);
  parts.push(`<text x="16" y="${m.t + ph / 2}" font-size="13" text-anchor="middle" fill="#222" transform="rotate(-90 16 ${m.t + ph / 2})">True accept rate (TAR)</text>`);
  parts.push(`<clipPath id="plot-clip"><rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}"/></clipPath>`);
  models.forEach((md, i) => {
    const pts: string[] = [];
    md.roc.fpr.forEach((f, k) => {
      const t = md.roc.tpr[k]!;
      if (f > 0 && Number.isFinite(f) && Number.isFinite(t)) pts.push(`${X(f).toFixed(2)},${Y(t).toFixed(2)}`);
    });
    if (pts.length < 2) return;
    parts.push(`<polyline class="roc-curve" clip-path="url(#plot-clip)" fill="none" stroke="${CURVE_COLORS[i % CURVE_COLORS.length]}" stroke-width="2.5" stroke-linejoin="round" points="${pts.join(' ')}"><title>${esc(md.name)}</title></polyline>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

/** The self-contained HTML report. */
export function renderHtml(r: EvalReport): string {
  const ds = r.dataset;
  const fars = r.models[0]?.tarAtFar.map((t) => t.far) ?? [];
  const verif = r.models.some((m) => m.accuracy !== undefined);
  const teacher = r.models[0];
  const legend = r.models.map((m, i) => `<li><span class="swatch" style="background:${CURVE_COLORS[i % CURVE_COLORS.length]}"></span>${esc(m.name)}${i === 0 && r.models.length > 1 ? ' (teacher)' : ''}</li>`).join('');
  const summaryHead = `<tr><th>model</th>${verif ? '<th>accuracy %</th><th>&plusmn; std</th><th title="teacher accuracy minus this model accuracy, in points: positive = accuracy lost">drop vs teacher, points (teacher &minus; model; + = worse)</th><th>VAL@FAR=' + fmtFar(teacher?.farTarget ?? 1e-3) + ' %</th>' : ''}<th>AUC %</th>${fars.map((f) => `<th>TAR@FAR=${fmtFar(f)} %</th>`).join('')}<th>images/s</th></tr>`;
  const summaryRows = r.models.map((m, i) => `<tr><td><span class="swatch" style="background:${CURVE_COLORS[i % CURVE_COLORS.length]}"></span>${esc(m.name)}</td>${verif ? `<td>${pct(m.accuracy)}</td><td>${pct(m.std)}</td><td>${dropPoints(m, teacher, i === 0)}</td><td>${pct(m.val)} &plusmn; ${pct(m.valStd)}</td>` : ''}<td>${pct(m.auc)}</td>${fars.map((f) => `<td>${pct(m.tarAtFar.find((t) => t.far === f)?.tar)}</td>`).join('')}<td>${m.imagesPerSecond.toFixed(1)}</td></tr>`).join('\n');
  let folds = '';
  if (verif) {
    const nF = Math.max(...r.models.map((m) => m.foldAccuracies?.length ?? 0));
    const head = `<tr><th>fold</th>${r.models.map((m) => `<th>${esc(m.name)} accuracy %</th><th>distance threshold</th>`).join('')}</tr>`;
    const rows: string[] = [];
    for (let f = 0; f < nF; f++) {
      rows.push(`<tr><td>${f + 1}</td>${r.models.map((m) => `<td>${pct(m.foldAccuracies?.[f])}</td><td>${m.foldThresholds?.[f]?.toFixed(2) ?? '-'}</td>`).join('')}</tr>`);
    }
    rows.push(`<tr class="total"><td>mean</td>${r.models.map((m) => `<td>${pct(m.accuracy)} &plusmn; ${pct(m.std)}</td><td></td>`).join('')}</tr>`);
    folds = `<h2>Per-fold accuracy (insightface 10-fold protocol)</h2>\n<table>${head}\n${rows.join('\n')}</table>`;
  }
  const metaRows = r.models.map((m) => {
    const nz = m.meta.preprocessing.normalize;
    const norm = nz === 'raw' ? 'raw 0..255' : `(x - ${JSON.stringify(nz.mean)}) / ${JSON.stringify(nz.std)}`;
    const al = m.meta.alignment;
    const align = !al ? '' : al.kind === 'box' ? `box ${al.preset}` : `5-point template${al.name ? ` ${al.name}` : ''}`;
    return `<tr><td>${esc(m.name)}</td><td>${esc(m.meta.path)}</td><td>${m.meta.format}</td><td>${m.meta.inputShape[0]}</td><td>${m.meta.preprocessing.colorOrder}</td><td>${esc(norm)}</td><td>${esc(align)}</td><td>${m.meta.layout ?? 'NHWC'}</td><td>${m.meta.outputDim || ''}</td><td>${m.metaAssumed ? 'assumed (nothing records it)' : 'recorded'}</td></tr>`;
  }).join('\n');
  const json = JSON.stringify(r).replace(/</g, '\\u003c');
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>quantface eval: ${esc(ds.kind)} ${esc(ds.path)}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:16px 24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 8px}
.sub{color:#555;margin:0 0 12px}
.plot{display:flex;gap:20px;align-items:flex-start}
ul.legend{list-style:none;padding:0;margin:24px 0 0}ul.legend li{margin:4px 0}
.swatch{display:inline-block;width:14px;height:4px;margin:0 8px 3px 0;vertical-align:middle}
table{border-collapse:collapse;margin:4px 0}th,td{border:1px solid #ccd;padding:3px 8px;text-align:right}
th{background:#eef0f6;white-space:nowrap}td:first-child,th:first-child{text-align:left;white-space:nowrap}tr.total td{font-weight:600}
.crops{display:flex;flex-wrap:wrap;gap:8px}.crops figure{margin:0;text-align:center;font-size:11px;color:#555}.crops figcaption{max-width:112px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
</style></head><body>
<h1>Face verification: ${esc(ds.path.split(/[\\/]/).filter(Boolean).pop() ?? ds.path)} (${ds.kind === 'ijb' ? 'IJB 1:1' : ds.kind === 'bin' ? 'insightface .bin' : 'pairs list'})</h1>
<p class="sub">${esc(ds.path)} &middot; ${ds.nPairs} pairs (${ds.nPos} genuine, ${ds.nNeg} impostor) &middot; ${ds.nImages} images${ds.nTemplates !== undefined ? ` &middot; ${ds.nTemplates} templates` : ''} &middot; alignment: ${esc(ds.align)}${ds.limited ? ' &middot; <b>limited subset</b>' : ''} &middot; ${esc(r.created)} &middot; quantface ${esc(r.version)}</p>
<div class="plot">
${rocSvg(r.models)}
<ul class="legend">${legend}</ul>
</div>
<h2>Summary</h2>
<table>${summaryHead}
${summaryRows}</table>
${folds}
${r.samples?.length ? `<h2>Aligned crops (a sample, as the first model sees them)</h2>\n<div class="crops">${r.samples.map((c) => `<figure><img src="data:image/png;base64,${c.png}" width="${c.size}" height="${c.size}" alt="${esc(c.image)}"><figcaption>${esc(c.image.split(/[\\/]/).pop() ?? c.image)}</figcaption></figure>`).join('')}</div>` : ''}
<h2>Models and preprocessing</h2>
<table><tr><th>model</th><th>file</th><th>format</th><th>input</th><th>colour</th><th>scaling</th><th>alignment</th><th>layout</th><th>dim</th><th>description</th></tr>
${metaRows}</table>
<p class="sub">Protocol: ${verif ? 'flip-sum embeddings, L2-normalised, squared L2 distance, thresholds 0..3.99 step 0.01, 10 contiguous folds, first best threshold on the other nine (insightface); VAL at FAR=1e-3 with thresholds step 0.001.' : 'ArcFace-template similarity alignment, faceness-weighted flip-sum features, media mean, template sum, L2-normalised, cosine scores (insightface IJB 1:1).'} ROC: scikit-learn roc_curve with intermediate-point dropping; TAR at the ROC point nearest each FAR.</p>
<script type="application/json" id="quantface-report">${json}</script>
</body></html>
`;
}

async function atomicWrite(file: string, data: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined); // no partial temp file left beside the report
    throw ioError(e, file, 'write');
  }
}

/** Writes report.json and report.html into dir (created if needed); returns their paths. */
export async function writeReport(r: EvalReport, dir: string): Promise<{ json: string; html: string }> {
  try { await mkdir(dir, { recursive: true }); } catch (e) { throw ioError(e, dir, 'create'); }
  const json = join(dir, 'report.json'), html = join(dir, 'report.html');
  await atomicWrite(json, JSON.stringify(r, null, 2) + '\n');
  await atomicWrite(html, renderHtml(r));
  return { json, html };
}
