import { INVALID_SPAN_CONTEXT, TraceFlags } from '@opentelemetry/api';
import { expect } from 'chai';
import { incomingTraceContext, traceHeaders } from '../../middleware/trace-context.js';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN_ID = '00f067aa0ba902b7';
const WELL_FORMED = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

describe('W3C trace context in and out', () => {
  it("reads a caller's traceparent and tracestate, and writes them back unchanged", () => {
    const incoming = incomingTraceContext({ traceparent: `00-${TRACE_ID}-${SPAN_ID}-01`, tracestate: 'vendor=abc,other=x' });
    expect(incoming).to.deep.include({ traceId: TRACE_ID, spanId: SPAN_ID, traceFlags: TraceFlags.SAMPLED, isRemote: true });
    expect(traceHeaders(incoming ?? INVALID_SPAN_CONTEXT)).to.deep.equal({
      traceparent: `00-${TRACE_ID}-${SPAN_ID}-01`,
      tracestate: 'vendor=abc,other=x',
    });
  });

  it('ignores what Trace Context level 1 says a receiver must ignore', () => {
    for (const traceparent of [
      `ff-${TRACE_ID}-${SPAN_ID}-01`,
      `00-${'0'.repeat(32)}-${SPAN_ID}-01`,
      `00-${TRACE_ID}-${'0'.repeat(16)}-01`,
      `00-${TRACE_ID}-${SPAN_ID}-01-extra`,
      `00-${TRACE_ID.toUpperCase()}-${SPAN_ID}-01`,
      `00-${TRACE_ID}-${SPAN_ID}`,
      'ff-not-a-trace',
      '',
    ]) {
      expect(incomingTraceContext({ traceparent, tracestate: 'vendor=abc' }), traceparent).to.equal(undefined);
    }
    expect(incomingTraceContext({ tracestate: 'vendor=abc' }), 'tracestate alone').to.equal(undefined);
    expect(incomingTraceContext({}), 'nothing').to.equal(undefined);
  });

  it('accepts a later version with more fields, and sends it on as version 00', () => {
    const incoming = incomingTraceContext({ traceparent: `01-${TRACE_ID}-${SPAN_ID}-01-future` });
    expect(incoming).to.deep.include({ traceId: TRACE_ID, spanId: SPAN_ID });
    expect(traceHeaders(incoming ?? INVALID_SPAN_CONTEXT)).to.deep.equal({ traceparent: `00-${TRACE_ID}-${SPAN_ID}-01` });
  });

  it('passes on only the flags Trace Context defines, so the traceparent sent stays well formed', () => {
    for (const [flags, sent] of [
      ['ff', '03'],
      ['10', '00'],
      ['03', '03'],
      ['00', '00'],
    ] as const) {
      const incoming = incomingTraceContext({ traceparent: `00-${TRACE_ID}-${SPAN_ID}-${flags}` });
      const { traceparent } = traceHeaders(incoming ?? INVALID_SPAN_CONTEXT);
      expect(traceparent, `flags ${flags}`).to.match(WELL_FORMED).and.equal(`00-${TRACE_ID}-${SPAN_ID}-${sent}`);
    }
  });

  it('drops invalid tracestate members, and sends no tracestate when none is left', () => {
    const mixed = incomingTraceContext({ traceparent: `00-${TRACE_ID}-${SPAN_ID}-01`, tracestate: 'Bad Key=1, good=2,novalue' });
    expect(traceHeaders(mixed ?? INVALID_SPAN_CONTEXT)).to.deep.equal({ traceparent: `00-${TRACE_ID}-${SPAN_ID}-01`, tracestate: 'good=2' });
    const none = incomingTraceContext({ traceparent: `00-${TRACE_ID}-${SPAN_ID}-01`, tracestate: '\u00e9=1' });
    expect(traceHeaders(none ?? INVALID_SPAN_CONTEXT)).to.deep.equal({ traceparent: `00-${TRACE_ID}-${SPAN_ID}-01` });
  });

  it('sends nothing for an invalid span context (tracing off, no caller context)', () => {
    expect(traceHeaders(INVALID_SPAN_CONTEXT)).to.deep.equal({});
  });
});
