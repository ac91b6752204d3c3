/**
 * The soak's chart, SVG written by hand (no browser, no plotting library): per run, four panels
 * over the run's seconds: throughput (sent and answered 200 per second), p99 latency of the
 * requests sent in each second, failures per second (documented and not), and each instance's
 * RSS. The fault windows are shaded across every panel and named at the top.
 */
import type { RunResult, SoakResults } from './report.js';

const WIDTH = 960;
const LEFT = 64;
const RIGHT = 16;
const PANEL = 120;
const GAP = 34;
const COLORS = {
  sent: '#9aa5b1',
  ok: '#1f77b4',
  p99: '#9467bd',
  documented: '#ff9f1c',
  undocumented: '#d62728',
  rss: ['#2ca02c', '#8c564b'],
  fault: '#f2c14e',
};

const esc = (text: string): string => text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;');
const num = (n: number): string => (Math.round(n * 10) / 10).toString();

/** A "nice" upper bound for an axis. */
function niceMax(max: number): number {
  if (!(max > 0)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 2.5, 5, 10]) if (max <= step * magnitude) return step * magnitude;
  return 10 * magnitude;
}

interface Panel {
  title: string;
  unit: string;
  series: { name: string; color: string; points: [number, number][]; bars?: boolean }[];
}

function panels(run: RunResult): Panel[] {
  const t = run.timeline;
  return [
    {
      title: 'Throughput',
      unit: 'req/s',
      series: [
        { name: 'sent', color: COLORS.sent, points: t.map((s) => [s.t + 0.5, s.sent]) },
        { name: '200', color: COLORS.ok, points: t.map((s) => [s.t + 0.5, s.ok]) },
      ],
    },
    {
      title: 'p99 latency (requests sent in that second)',
      unit: 'ms',
      series: [{ name: 'p99', color: COLORS.p99, points: t.map((s) => [s.t + 0.5, Number.isNaN(s.p99Ms) ? 0 : s.p99Ms]) }],
    },
    {
      title: 'Failures',
      unit: 'req/s',
      series: [
        { name: 'documented (throttle window, Graph 503)', color: COLORS.documented, points: t.map((s) => [s.t, s.documented]), bars: true },
        { name: 'undocumented', color: COLORS.undocumented, points: t.map((s) => [s.t, s.undocumented]), bars: true },
      ],
    },
    {
      title: 'RSS per instance',
      unit: 'MiB',
      series: run.rss.map((r, i) => ({
        name: r.instance,
        color: COLORS.rss[i % COLORS.rss.length] ?? '#000',
        points: r.samples.filter(([x, y]) => x >= 0 && !Number.isNaN(y)),
      })),
    },
  ];
}

function renderRun(run: RunResult, top: number): { svg: string; height: number } {
  const seconds = run.loadSeconds;
  const plotWidth = WIDTH - LEFT - RIGHT;
  const x = (t: number): number => LEFT + (Math.max(0, Math.min(seconds, t)) / seconds) * plotWidth;
  const parts: string[] = [];
  const heading = `${run.mode === 'single' ? 'One Redis server' : 'Redis Cluster (3 masters)'}: ${run.settings.rate} req/s for ${run.loadSeconds} s, ${run.settings.users} users; checks ${run.checks.filter((c) => c.passed).length}/${run.checks.length} pass`;
  parts.push(`<text x="${LEFT}" y="${top + 16}" font-size="15" font-weight="bold">${esc(heading)}</text>`);
  const labelsTop = top + 26;
  run.windows.forEach((w, i) => {
    parts.push(
      `<text x="${num(x(w.start))}" y="${labelsTop + 12 + (i % 2) * 13}" font-size="10" fill="#7a5b00">${esc(`${i + 1}. ${w.label}`)}</text>`,
    );
  });
  let y = labelsTop + 44;
  for (const panel of panels(run)) {
    const values = panel.series.flatMap((s) => s.points.map(([, v]) => v));
    const stacked = panel.series.every((s) => s.bars)
      ? (panel.series[0]?.points.map(([, v], i) => v + (panel.series[1]?.points[i]?.[1] ?? 0)) ?? [])
      : values;
    const max = niceMax(Math.max(0, ...stacked));
    const yOf = (v: number): number => y + PANEL - (v / max) * PANEL;
    for (const [i, w] of run.windows.entries()) {
      parts.push(
        `<rect x="${num(x(w.start))}" y="${y}" width="${num(Math.max(1, x(w.end) - x(w.start)))}" height="${PANEL}" fill="${COLORS.fault}" fill-opacity="0.28"/>`,
      );
      parts.push(`<text x="${num(x(w.start) + 2)}" y="${y + 10}" font-size="9" fill="#7a5b00">${i + 1}</text>`);
    }
    parts.push(`<text x="${LEFT}" y="${y - 6}" font-size="12" font-weight="bold">${esc(panel.title)}</text>`);
    let legendX = LEFT + 8 + panel.title.length * 7;
    for (const s of panel.series) {
      parts.push(
        `<rect x="${legendX}" y="${y - 14}" width="10" height="8" fill="${s.color}"/><text x="${legendX + 13}" y="${y - 6}" font-size="10">${esc(s.name)}</text>`,
      );
      legendX += 22 + s.name.length * 6;
    }
    for (const tick of [0, 0.5, 1]) {
      const ty = yOf(max * tick);
      parts.push(`<line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${num(ty)}" y2="${num(ty)}" stroke="#e3e3e3"/>`);
      parts.push(`<text x="${LEFT - 6}" y="${num(ty + 3)}" font-size="10" text-anchor="end">${num(max * tick)}</text>`);
    }
    parts.push(
      `<text x="12" y="${y + PANEL / 2}" font-size="10" transform="rotate(-90 12 ${y + PANEL / 2})" text-anchor="middle">${esc(panel.unit)}</text>`,
    );
    const barWidth = plotWidth / seconds;
    const base = panel.series[0]?.points ?? [];
    for (const [index, s] of panel.series.entries()) {
      if (s.bars) {
        for (const [i, [t, v]] of s.points.entries()) {
          if (v <= 0) continue;
          const below = index === 0 ? 0 : (base[i]?.[1] ?? 0);
          parts.push(
            `<rect x="${num(x(t))}" y="${num(yOf(v + below))}" width="${num(Math.max(1, barWidth - 1))}" height="${num(yOf(below) - yOf(v + below))}" fill="${s.color}"/>`,
          );
        }
      } else if (s.points.length > 0) {
        const d = s.points.map(([t, v], i) => `${i === 0 ? 'M' : 'L'}${num(x(t))},${num(yOf(v))}`).join(' ');
        parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.6"/>`);
      }
    }
    parts.push(`<line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${y + PANEL}" y2="${y + PANEL}" stroke="#444"/>`);
    for (let t = 0; t <= seconds; t += seconds >= 60 ? 10 : 5) {
      parts.push(`<text x="${num(x(t))}" y="${y + PANEL + 12}" font-size="10" text-anchor="middle">${t}</text>`);
    }
    y += PANEL + GAP;
  }
  parts.push(`<text x="${WIDTH - RIGHT}" y="${y - GAP + 24}" font-size="10" text-anchor="end">seconds since the load started</text>`);
  return { svg: parts.join('\n'), height: y - top + 8 };
}

export function renderChart(results: SoakResults): string {
  const rendered: string[] = [];
  let top = 8;
  for (const run of results.runs) {
    const { svg, height } = renderRun(run, top);
    rendered.push(svg);
    top += height + 16;
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${top}" viewBox="0 0 ${WIDTH} ${top}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    ...rendered,
    '</svg>',
    '',
  ].join('\n');
}
