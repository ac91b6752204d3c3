/**
 * Reads a V8 CPU profile (.cpuprofile, as `--cpu-prof` or the inspector writes it) and sums
 * self time by function and by where the code lives: a package (node_modules), one of our
 * files, a Node internal module, or V8's own buckets ((garbage collector), (program)).
 */
import { readFile } from 'node:fs/promises';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

interface SelfTime {
  name: string;
  /** Microseconds of self time per request served during the profile. */
  microsPerRequest: number;
  /** Share of all non-idle samples. */
  share: number;
}

export interface ProfileSummary {
  file: string;
  requests: number;
  /** Non-idle profiled CPU time per request, µs. */
  microsPerRequest: number;
  byFunction: SelfTime[];
  byPlace: SelfTime[];
  /** Our own functions (api/, middleware/, cache/) with everything they call: where a request's time goes, stage by stage. */
  inclusiveOurs: SelfTime[];
}

const ROOT = new URL('../', import.meta.url).href;

/** Where a frame's code lives: `jose`, `@koa/router`, `api/app.ts`, `node:internal/async_hooks`, `(garbage collector)`. */
function placeOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  const modules = url.lastIndexOf('/node_modules/');
  if (modules >= 0) {
    const [first = '', second = ''] = url.slice(modules + '/node_modules/'.length).split('/');
    return first.startsWith('@') ? `${first}/${second}` : first;
  }
  if (url.startsWith(ROOT)) return url.slice(ROOT.length);
  return url;
}

export async function summarizeProfile(file: string, requests: number, top = 25): Promise<ProfileSummary> {
  const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  // Sample i's time is the gap to the next sample (the last one gets the mean gap).
  const micros = new Map<number, number>();
  const mean = (profile.endTime - profile.startTime) / Math.max(1, profile.samples.length);
  profile.samples.forEach((id, i) => micros.set(id, (micros.get(id) ?? 0) + (profile.timeDeltas[i + 1] ?? mean)));
  const parents = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id);
  const byFunction = new Map<string, number>();
  const byPlace = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let total = 0;
  for (const [id, time] of micros) {
    const frame = nodes.get(id)?.callFrame;
    if (!frame || frame.functionName === '(idle)') continue;
    total += time;
    byFunction.set(nameOf(frame), (byFunction.get(nameOf(frame)) ?? 0) + time);
    byPlace.set(placeOf(frame), (byPlace.get(placeOf(frame)) ?? 0) + time);
    // Each of our functions on the stack once (koa-compose nests middlewares in one another).
    const ours = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parents.get(at)) {
      const caller = nodes.get(at)?.callFrame;
      if (caller && OURS.test(placeOf(caller))) ours.add(nameOf(caller));
    }
    for (const name of ours) inclusive.set(name, (inclusive.get(name) ?? 0) + time);
  }
  const rank = (map: Map<string, number>): SelfTime[] =>
    [...map]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, time]) => ({ name, microsPerRequest: time / requests, share: time / total }));
  return { file, requests, microsPerRequest: total / requests, byFunction: rank(byFunction), byPlace: rank(byPlace), inclusiveOurs: rank(inclusive) };
}

const OURS = /^(api|middleware|cache)\//;

/** `validateAccessToken middleware/bearer/validator.ts`, with a line where the profile has one (tsx's output has none). */
function nameOf(frame: CallFrame): string {
  if (!frame.url) return frame.functionName || '(anonymous)';
  return `${frame.functionName || '(anonymous)'} ${placeOf(frame)}${frame.lineNumber > 0 ? `:${frame.lineNumber + 1}` : ''}`;
}
