/**
 * The Invoker port: how ingress hands a replication request to fan-out. In AWS, an asynchronous
 * Lambda invoke (InvocationType Event; Lambda retries twice and then sends the event to the
 * on-failure destination, a dead-letter queue). In the embedded runtime, a call in the same
 * process whose failures are kept as dead letters the same way.
 */
import pLimit from 'p-limit';

export interface Invoker {
  /** Hands `payload` (a serialised request) to fan-out without waiting for it to finish. */
  invokeAsync(payload: string): Promise<void>;
}

export class InProcessInvoker implements Invoker {
  readonly failures: Array<{ payload: string; error: unknown }> = [];
  private readonly pending = new Set<Promise<void>>();
  private readonly limit: <T>(fn: () => Promise<T>) => Promise<T>;

  /**
   * `attempts` mirrors Lambda's async retries (1 + 2); `concurrency`, a function's reserved
   * concurrency: invocations beyond it wait their turn (as Lambda holds throttled asynchronous
   * events in its queue). Default: no limit.
   */
  constructor(
    private readonly target: (payload: string) => Promise<unknown>,
    private readonly attempts = 3,
    concurrency = Infinity,
  ) {
    this.limit = Number.isFinite(concurrency) ? pLimit(concurrency) : (fn) => fn();
  }

  async invokeAsync(payload: string): Promise<void> {
    const run = this.limit(async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          await this.target(payload);
          return;
        } catch (error) {
          if (attempt >= this.attempts) {
            this.failures.push({ payload, error });
            return;
          }
        }
      }
    });
    this.pending.add(run);
    void run.finally(() => this.pending.delete(run));
  }

  /** Invocations still running. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** Waits until every invocation made so far has finished. */
  async idle(): Promise<void> {
    while (this.pending.size) await Promise.all([...this.pending]);
  }
}
