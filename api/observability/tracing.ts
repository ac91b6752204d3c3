import { AsyncLocalStorage } from 'node:async_hooks';
import {
  INVALID_SPAN_CONTEXT,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Span,
  type SpanContext,
} from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  type Sampler,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { ATTR_ERROR_TYPE, ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import type { RequestTracer } from '../../middleware/request-span.js';
import { DEFAULT_TRACE_SAMPLER, type TraceSamplerConfig } from '../config/load-config.js';
import { errorCode } from '../error-code.js';
import { traceHeaders } from '../../middleware/trace-context.js';

export interface TracingOptions {
  serviceName: string;
  /** OTLP/HTTP base URL: spans are batched to `<it>/v1/traces`. */
  otlpEndpoint?: string;
  /** Instead of OTLP (tests): every span is handed to it as it ends. */
  exporter?: SpanExporter;
  /** OTEL_TRACES_SAMPLER / _ARG; default: our own ratio, whatever the caller's sampled flag. */
  sampler?: TraceSamplerConfig;
}

interface SpanOptions {
  kind?: SpanKind;
  attributes?: Attributes;
}

/** OpenTelemetry tracing for one app: its own provider and context, nothing global. */
export interface Tracing extends RequestTracer {
  readonly enabled: boolean;
  /** Runs `work` in a child span of the current one, ending it after; errors mark it failed. */
  span<T>(name: string, work: (span: Span) => Promise<T>, options?: SpanOptions): Promise<T>;
  /** A child span of the current one that the caller ends (work that ends in callbacks). */
  startSpan(name: string, options?: SpanOptions): Span;
  /** `traceparent` (and `tracestate`) naming `span` as the parent, for an outgoing request. */
  propagationHeaders(span: Span): Record<string, string>;
  /** Flushes and stops the exporter. */
  close(): Promise<void>;
}

const NO_SPAN = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/**
 * Tracing is on when an OTLP endpoint (or, in tests, an exporter) is given. The current span
 * travels in an AsyncLocalStorage of this app, so spans nest across awaits without registering
 * a global context manager or provider: many apps in one process trace independently.
 * Off, nothing is recorded and no AsyncLocalStorage runs (in Node 20 an active one taxes every
 * promise of the process); the routes pass a caller's `traceparent` on themselves.
 */
export function createTracing(options: TracingOptions): Tracing {
  const processor = spanProcessor(options);
  if (!processor) {
    return {
      enabled: false,
      traceRequest: (_incoming, handle) => handle(NO_SPAN),
      span: (_name, work) => work(NO_SPAN),
      startSpan: () => NO_SPAN,
      propagationHeaders,
      close: async () => {},
    };
  }

  const contexts = new AsyncLocalStorage<Context>();
  const current = (): Context => contexts.getStore() ?? ROOT_CONTEXT;
  const parentOf = (incoming: SpanContext | undefined): Context => (incoming ? trace.setSpanContext(ROOT_CONTEXT, incoming) : ROOT_CONTEXT);

  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: options.serviceName }),
    sampler: samplerOf(options.sampler ?? DEFAULT_TRACE_SAMPLER),
    spanProcessors: [processor],
  });
  const tracer = provider.getTracer('obo-middle-tier');

  async function within<T>(span: Span, parent: Context, work: (span: Span) => Promise<T>): Promise<T> {
    try {
      return await contexts.run(trace.setSpan(parent, span), () => work(span));
    } catch (error) {
      span.setStatus({ code: SpanStatusCode.ERROR });
      span.setAttribute(ATTR_ERROR_TYPE, errorType(error));
      throw error;
    } finally {
      span.end();
    }
  }

  return {
    enabled: true,
    traceRequest(incoming, handle) {
      const parent = parentOf(incoming);
      return within(tracer.startSpan('HTTP request', { kind: SpanKind.SERVER }, parent), parent, handle);
    },
    span(name, work, spanOptions = {}) {
      const parent = current();
      return within(tracer.startSpan(name, spanOptions, parent), parent, work);
    },
    startSpan: (name, spanOptions = {}) => tracer.startSpan(name, spanOptions, current()),
    propagationHeaders,
    close: () => provider.shutdown(),
  };
}

/**
 * The standard OTEL_TRACES_SAMPLER values. Only a `parentbased_*` sampler follows the sampled
 * flag of a caller's `traceparent` (then the named sampler decides for requests without one);
 * the others decide on their own, so a caller cannot have its requests exported at will.
 */
function samplerOf({ name, ratio }: TraceSamplerConfig): Sampler {
  switch (name) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(ratio);
    case 'parentbased_always_on':
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
  }
}

function spanProcessor(options: TracingOptions): SpanProcessor | undefined {
  if (options.exporter) return new SimpleSpanProcessor(options.exporter);
  if (options.otlpEndpoint) return new BatchSpanProcessor(new OTLPTraceExporter({ url: `${options.otlpEndpoint}/v1/traces` }));
  return undefined;
}

function propagationHeaders(span: Span): Record<string, string> {
  return traceHeaders(span.spanContext());
}

/** Our stable error codes (never a message: it could carry what a span must not). */
function errorType(error: unknown): string {
  return errorCode(error) ?? (error instanceof Error ? error.name : 'unknown');
}
