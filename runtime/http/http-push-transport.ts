/**
 * The write side of one SubscribeEvents response over Connect or gRPC-Web
 * (contract §7, §14), as the push session needs it.
 *
 * Connect's router pulls a server-streaming method's messages only as the
 * response body is read, and h3's node adapter (srvx) reads the body only once
 * node:http accepted the previous chunk (`write()` returned true, or `drain`
 * fired). A push session parked at a `yield` the router does not pull could
 * not be ended by the hub, so the session runs on its own and hands each
 * event to the router through a slot; `whenAccepted` resolves once the router
 * took it. While the socket does not drain, the slot stays full and further
 * events stay in the hub's bounded queue, where they overflow. The response
 * body is wrapped so that the hub can reset it (destroying the response) and
 * so that its end releases the stream.
 */
import type { SignedEvent } from "../../handlers/subscribe-events.js";
import type { PushTransport } from "../push/push-session.js";

/** Why a response body was errored: the client did not take its terminal status in time. */
const RESET_REASON = new Error("push stream reset: terminal status not taken in time");

/** Why a response body was errored: the client went away first. */
const GONE_REASON = new Error("push stream client went away");

/** One SubscribeEvents call's HTTP transport: the event slot and the response body. */
export class HttpPushTransport implements PushTransport {
  /** Events the session produced that the router has not taken yet (one at most, in practice). */
  private readonly handed: SignedEvent[] = [];
  /** The session's end, once it ended: with its error when it threw. */
  private outcome: { readonly error?: unknown } | undefined;
  private wakeWriter: (() => void) | undefined;
  private wakeReader: (() => void) | undefined;
  private body: ReadableStreamDefaultController<Uint8Array> | undefined;
  /** Why the body must error as soon as it exists, once the call was reset or abandoned. */
  private abortReason: Error | undefined;
  private isClosed = false;
  private markClosed!: () => void;
  /** Settles once the response is done: its body ended, was cancelled or reset, or the client left. */
  readonly closed = new Promise<void>((resolve) => {
    this.markClosed = resolve;
  });

  /** @param signal the request's signal, aborted when the client goes away before the response ended */
  constructor(signal: AbortSignal) {
    // The client went away: error the body as well, so that a server that has
    // not noticed yet stops writing it and frees the connection.
    if (signal.aborted) this.abort(GONE_REASON);
    else signal.addEventListener("abort", () => this.abort(GONE_REASON), { once: true });
  }

  /**
   * Runs `session` on its own and yields its events as the router pulls them,
   * then ends as the session did (its error thrown after the events it yielded
   * before failing). Called once per call.
   */
  async *deliver(
    session: AsyncIterable<SignedEvent>,
  ): AsyncGenerator<SignedEvent, void, undefined> {
    void this.pump(session);
    for (;;) {
      const event = this.handed.shift();
      if (event !== undefined) {
        // The router asked for this event: the transport accepted the last one.
        this.wakeWriter?.();
        yield event;
        continue;
      }
      if (this.outcome !== undefined) {
        if ("error" in this.outcome) throw this.outcome.error;
        return;
      }
      await new Promise<void>((resolve) => {
        this.wakeReader = resolve;
      });
      this.wakeReader = undefined;
    }
  }

  /**
   * The response with its body wrapped: read only as the server asks for
   * more (no read-ahead), erroring on {@link reset}, and closing the transport
   * when it ends or is cancelled.
   */
  respond(response: Response): Response {
    if (response.body === null) {
      this.close();
      return response;
    }
    const reader = response.body.getReader();
    const body = new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          this.body = controller;
          if (this.abortReason !== undefined) controller.error(this.abortReason);
        },
        pull: async (controller) => {
          try {
            const { done, value } = await reader.read();
            if (done) {
              controller.close();
              this.close();
            } else controller.enqueue(value);
          } catch (error) {
            this.close();
            throw error;
          }
        },
        cancel: async (reason) => {
          this.close();
          await reader.cancel(reason).catch(() => {});
        },
      },
      { highWaterMark: 0 },
    );
    return new Response(body, { status: response.status, headers: response.headers });
  }

  /**
   * `undefined` once every event handed over so far was taken by the router,
   * the call is over, or one of `signals` aborted; else a promise that
   * resolves then. The signals must be the ones given to {@link watch}.
   */
  whenAccepted(signals: readonly AbortSignal[]): Promise<void> | undefined {
    const done = () =>
      this.handed.length === 0 || this.isClosed || signals.some((signal) => signal.aborted);
    if (done()) return undefined;
    return new Promise((resolve) => {
      this.wakeWriter = () => {
        if (!done()) return;
        this.wakeWriter = undefined;
        resolve();
      };
    });
  }

  /** Wakes a pending {@link whenAccepted} when any of `signals` aborts; returns the unwatch. */
  watch(signals: readonly AbortSignal[]): () => void {
    const onAbort = () => this.wakeWriter?.();
    for (const signal of signals) signal.addEventListener("abort", onAbort, { once: true });
    return () => {
      for (const signal of signals) signal.removeEventListener("abort", onAbort);
    };
  }

  /**
   * Errors the response body: the server destroys the response and its
   * socket, whatever the body's reader is waiting for (a `drain` included).
   */
  reset(): void {
    this.abort(RESET_REASON);
  }

  /** Takes the session's events into the slot, and its end. */
  private async pump(session: AsyncIterable<SignedEvent>): Promise<void> {
    try {
      for await (const event of session) {
        this.handed.push(event);
        this.wakeReader?.();
      }
      this.outcome = {};
    } catch (error) {
      this.outcome = { error };
    }
    this.wakeReader?.();
  }

  /** Errors the response body (now, or once it exists) and closes the transport. */
  private abort(reason: Error): void {
    if (this.isClosed) return;
    this.abortReason = reason;
    this.body?.error(reason);
    this.close();
  }

  private close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.markClosed();
    this.wakeWriter?.();
  }
}
