/**
 * What every call served straight on its HTTP/2 stream (a lane,
 * `runtime/grpc/http2-lane.ts`) shares with grpc-js: which requests a lane
 * takes as they are, reading the one request message with grpc-js's limits and
 * status messages, the deadline, the response headers, and how a status is
 * sent (trailers-only before any message, trailers after messages).
 */
import { constants, type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import { status } from "@grpc/grpc-js";
import { ServerError, Status } from "nice-grpc";
import { isGatewayError, OUTCOMES, outcomeError } from "../../handlers/errors.js";
import { invalid } from "../../handlers/execute-command.js";
import type { Logger } from "../../handlers/ports.js";
import type { Metrics } from "../telemetry/metrics.js";
import { isUndecodable, toServerError } from "./server.js";

/** grpc-js's `grpc-timeout` pattern and units (server-interceptors.ts). */
const TIMEOUT_PATTERN = /(\d{1,8})\s*([HMSmun])/;
const TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = {
  H: 3_600_000,
  M: 60_000,
  S: 1000,
  m: 1,
  u: 0.001,
  n: 0.000001,
};

/** The response headers grpc-js sends before a message. */
const RESPONSE_HEADERS = {
  [constants.HTTP2_HEADER_STATUS]: constants.HTTP_STATUS_OK,
  [constants.HTTP2_HEADER_CONTENT_TYPE]: "application/grpc+proto",
  "grpc-accept-encoding": "identity,deflate,gzip",
  "grpc-encoding": "identity",
};
const OK_TRAILERS = { "grpc-status": String(status.OK), "grpc-message": "OK" };

/**
 * The call's timeout in ms (`undefined`: none) when a lane can serve the
 * request as grpc-js would; false to leave it to grpc-js, which answers a
 * wrong content type, decompresses, and refuses a malformed timeout.
 */
export function takenAsIs(headers: IncomingHttpHeaders): number | undefined | false {
  const contentType = headers[constants.HTTP2_HEADER_CONTENT_TYPE];
  if (typeof contentType !== "string" || !contentType.startsWith("application/grpc")) return false;
  const encoding = headers["grpc-encoding"];
  if (encoding !== undefined && encoding !== "identity") return false;
  const timeout = headers["grpc-timeout"];
  if (timeout === undefined) return undefined;
  const match = TIMEOUT_PATTERN.exec(String(timeout));
  if (match === null) return false;
  return (Number(match[1]) * TIMEOUT_UNIT_MS[match[2]!]!) | 0;
}

/** What every lane of the listener needs from the gateway. */
export interface LaneOptions {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly isShuttingDown: () => boolean;
  /** grpc-js's `grpc.max_receive_message_length`: larger requests are refused as grpc-js does. */
  readonly maxReceiveMessageBytes: number;
}

/** A method served on a lane, as the gateway middleware's steps need it. */
export interface LaneMethod extends LaneOptions {
  /** The labels of its `gateway_grpc_request_duration_seconds`. */
  readonly durationLabels: { readonly method: string };
  /** The labels of its `gateway_grpc_requests_total`, by status name, made as each is first needed. */
  readonly requestLabels: Map<string, { readonly method: string; readonly code: string }>;
}

/** How a lane call is set up: its stream, method and grpc-js's limits. */
export interface LaneCallOptions {
  readonly stream: ServerHttp2Stream;
  /** The method's HTTP/2 path, `/package.Service/Method`, as grpc-js names it in statuses. */
  readonly path: string;
  /** grpc-js's `grpc.max_receive_message_length`: larger requests are refused as grpc-js does. */
  readonly maxReceiveMessageBytes: number;
  /** From `takenAsIs`; `undefined`: no deadline. */
  readonly timeoutMs: number | undefined;
}

/**
 * One call of a method with a single request message (unary or server
 * streaming) on its HTTP/2 stream: reads the request with the answers of
 * grpc-js's decoder, runs the method once the client half-closed, and sends
 * messages and the status the way grpc-js does.
 */
export abstract class LaneCall {
  /** The client cancelled, the deadline passed or the stream closed before the status. */
  cancelled = false;
  private statusSent = false;
  private chunks: Buffer[] = [];
  private received = 0;
  private request: Buffer | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  protected readonly stream: ServerHttp2Stream;
  /** The call's absolute deadline in Unix ms, or `undefined` when the client set none. */
  protected readonly deadline: number | undefined;
  private readonly path: string;
  private readonly maxReceiveMessageBytes: number;
  private readonly timeoutMs: number | undefined;

  constructor(options: LaneCallOptions) {
    this.stream = options.stream;
    this.path = options.path;
    this.maxReceiveMessageBytes = options.maxReceiveMessageBytes;
    this.timeoutMs = options.timeoutMs;
    this.deadline = this.timeoutMs === undefined ? undefined : Date.now() + this.timeoutMs;
  }

  /** Runs the method on the request message's bytes, once the client sent exactly one. */
  protected abstract run(request: Buffer): void;

  /** The call ended before its status (client cancel, deadline, stream closed). */
  protected abstract onCancel(): void;

  /** The HTTP/2 stream closed, for whatever reason. */
  protected onClose(): void {}

  start(): void {
    const { stream } = this;
    // Errors end in 'close', handled there; the listener keeps them from throwing.
    stream.on("error", noop);
    stream.once("close", () => {
      clearTimeout(this.deadlineTimer);
      if (!this.statusSent) this.cancel();
      this.onClose();
    });
    stream.on("data", (chunk: Buffer) => this.onData(chunk));
    stream.once("end", () => this.onEnd());
    if (this.timeoutMs !== undefined) {
      this.deadlineTimer = setTimeout(() => {
        this.sendStatus(status.DEADLINE_EXCEEDED, "Deadline exceeded");
        this.cancel();
      }, this.timeoutMs);
    }
  }

  /** Collects the request; the same answers as grpc-js's decoder and request handling. */
  private onData(chunk: Buffer): void {
    if (this.statusSent) return;
    this.chunks.push(chunk);
    this.received += chunk.length;
    while (this.received >= 5) {
      const buffered = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      this.chunks = [buffered];
      const length = buffered.readUInt32BE(1);
      const max = this.maxReceiveMessageBytes;
      if (length > max) {
        this.sendStatus(
          status.RESOURCE_EXHAUSTED,
          `Received message larger than max (${length} vs ${max})`,
        );
        return;
      }
      if (this.received < 5 + length) return;
      if (this.request !== undefined) {
        // grpc-js names every single-request method "server streaming" here.
        this.sendStatus(
          status.UNIMPLEMENTED,
          `Received a second request message for server streaming method ${this.path}`,
        );
        return;
      }
      this.request = buffered.subarray(5, 5 + length);
      this.chunks = [buffered.subarray(5 + length)];
      this.received -= 5 + length;
    }
  }

  private onEnd(): void {
    if (this.statusSent) return;
    this.chunks = [];
    const { request } = this;
    if (request === undefined) {
      this.sendStatus(
        status.UNIMPLEMENTED,
        `Received no request message for server streaming method ${this.path}`,
      );
      return;
    }
    // A stream call lives long: it keeps no more of its request than its method does.
    this.request = undefined;
    this.run(request);
  }

  private cancel(): void {
    this.cancelled = true;
    this.onCancel();
  }

  /**
   * The gateway middleware's steps (`createGatewayMiddleware`) around `body`
   * for a lane call: the shutdown gate, undecodable requests, the error table
   * (counting failed authentication steps), the CANCELLED answer once the
   * call is gone, and the call's metrics. Resolves with the error to answer
   * with, or `undefined` once `body` succeeded.
   */
  protected async gated(
    method: LaneMethod,
    request: unknown,
    body: (request: unknown) => Promise<void>,
  ): Promise<ServerError | undefined> {
    const { metrics, durationLabels, requestLabels } = method;
    const start = performance.now();
    let code = "OK";
    let failure: ServerError | undefined;
    try {
      if (method.isShuttingDown()) throw outcomeError(OUTCOMES.shuttingDown);
      if (isUndecodable(request)) throw invalid("request message could not be decoded");
      await body(request);
    } catch (error) {
      const cause = error instanceof ServerError ? error.cause : error;
      if (isGatewayError(cause) && cause.details?.authFailure !== undefined) {
        metrics.authFailures.inc({ reason: cause.details.authFailure });
      }
      failure =
        this.cancelled && !isGatewayError(error) && !(error instanceof ServerError)
          ? new ServerError(Status.CANCELLED, "call cancelled")
          : toServerError(error, method.logger);
      code = Status[failure.code] ?? "UNKNOWN";
    } finally {
      // Label objects made once per method and status, not once per call.
      let labels = requestLabels.get(code);
      if (labels === undefined) {
        labels = { method: durationLabels.method, code };
        requestLabels.set(code, labels);
      }
      metrics.grpcRequests.inc(labels);
      metrics.grpcDuration.observe(durationLabels, (performance.now() - start) / 1000);
    }
    return failure;
  }

  /**
   * Writes one framed message (prefix and bytes), sending the response
   * headers first if they are not sent yet; `written` runs once the HTTP/2
   * stream accepted it. False, and nothing written, once the status is sent
   * or the stream is gone.
   */
  protected write(frame: Buffer, written: (error?: Error | null) => void): boolean {
    if (!this.open()) return false;
    const { stream } = this;
    if (!stream.headersSent) stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
    stream.write(frame, written);
    return true;
  }

  /**
   * Sends the status, once: after the messages written (and `last`, if given)
   * in the trailers, or as a trailers-only response before any message, as
   * grpc-js does. `details` goes out encodeURI'd, as grpc-js sends it.
   */
  protected sendStatus(code: status, details: string, last?: Buffer): void {
    if (!this.open()) return;
    this.statusSent = true;
    clearTimeout(this.deadlineTimer);
    const { stream } = this;
    if (!stream.headersSent && last === undefined) {
      stream.respond(
        {
          "grpc-status": String(code),
          "grpc-message": encodeURI(details),
          [constants.HTTP2_HEADER_STATUS]: constants.HTTP_STATUS_OK,
          [constants.HTTP2_HEADER_CONTENT_TYPE]: "application/grpc+proto",
        },
        { endStream: true },
      );
      // Whatever the client still sends is read and dropped.
      stream.resume();
      return;
    }
    if (!stream.headersSent) stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
    const trailers =
      code === status.OK && details === "OK"
        ? OK_TRAILERS
        : { "grpc-status": String(code), "grpc-message": encodeURI(details) };
    stream.once("wantTrailers", () => stream.sendTrailers(trailers));
    stream.end(last);
  }

  /** True while the call can still send messages and its status. */
  private open(): boolean {
    return !this.statusSent && !this.stream.destroyed && !this.stream.closed;
  }
}

function noop(): void {}
