/**
 * The Queue port: how tasks move between pipeline stages. SQS in AWS (lib/aws/sqs-queue.ts), an
 * in-memory queue with the same semantics in the embedded runtime: at-least-once delivery, a
 * visibility timeout, a receive count, delayed visibility for backoff, and a dead-letter queue
 * after `maxReceiveCount` receives.
 */

export interface Queue {
  /** Enqueues messages (the SQS implementation batches them by ten). */
  send(bodies: readonly string[], options?: { delaySeconds?: number }): Promise<void>;
  /**
   * Makes a received message visible again only after `seconds` (the commit barrier's backoff:
   * retried later, not in a hot loop). `handle` is the receipt handle of the delivery.
   */
  retryLater(handle: string, seconds: number): Promise<void>;
}

/** One delivery of a message, as a consumer sees it. */
export interface Delivery {
  messageId: string;
  receiptHandle: string;
  body: string;
  /** 1 on the first delivery. */
  receiveCount: number;
}

export interface InMemoryQueueOptions {
  name?: string;
  /** Seconds a received message stays invisible. Default 30. */
  visibilityTimeoutSeconds?: number;
  /** Receives before a message moves to the dead-letter list. Default 10. */
  maxReceiveCount?: number;
  /** Clock in ms, for tests. */
  now?: () => number;
}

interface Stored {
  id: string;
  body: string;
  receiveCount: number;
  visibleAt: number;
  handle?: string;
}

/**
 * The embedded runtime's queue. Time is wall-clock by default; `receive` hands out visible
 * messages, a message not deleted becomes visible again when its visibility timeout passes.
 */
export class InMemoryQueue implements Queue {
  readonly name: string;
  readonly deadLetters: Array<{ id: string; body: string; receiveCount: number }> = [];
  private readonly messages = new Map<string, Stored>();
  private readonly byHandle = new Map<string, string>();
  private readonly visibilityMs: number;
  private readonly maxReceiveCount: number;
  private readonly now: () => number;
  private sequence = 0;
  private readonly waiters = new Set<() => void>();

  constructor(options: InMemoryQueueOptions = {}) {
    this.name = options.name ?? 'queue';
    this.visibilityMs = (options.visibilityTimeoutSeconds ?? 30) * 1000;
    this.maxReceiveCount = options.maxReceiveCount ?? 10;
    this.now = options.now ?? Date.now;
  }

  async send(bodies: readonly string[], options: { delaySeconds?: number } = {}): Promise<void> {
    for (const body of bodies) {
      const id = `${this.name}-${++this.sequence}`;
      this.messages.set(id, { id, body, receiveCount: 0, visibleAt: this.now() + (options.delaySeconds ?? 0) * 1000 });
    }
    this.wake();
  }

  async retryLater(handle: string, seconds: number): Promise<void> {
    const id = this.byHandle.get(handle);
    const message = id ? this.messages.get(id) : undefined;
    if (message && message.handle === handle) message.visibleAt = this.now() + seconds * 1000;
  }

  /** Up to `max` visible messages; each becomes invisible for the visibility timeout. */
  receive(max = 10): Delivery[] {
    const now = this.now();
    const out: Delivery[] = [];
    for (const message of this.messages.values()) {
      if (out.length >= max) break;
      if (message.visibleAt > now) continue;
      if (message.receiveCount >= this.maxReceiveCount) {
        this.messages.delete(message.id);
        this.deadLetters.push({ id: message.id, body: message.body, receiveCount: message.receiveCount });
        continue;
      }
      message.receiveCount++;
      message.visibleAt = now + this.visibilityMs;
      message.handle = `${message.id}#${message.receiveCount}`;
      this.byHandle.set(message.handle, message.id);
      out.push({ messageId: message.id, receiptHandle: message.handle, body: message.body, receiveCount: message.receiveCount });
    }
    return out;
  }

  /** Deletes a delivered message (only with the handle of its latest delivery, as SQS does). */
  delete(handle: string): void {
    const id = this.byHandle.get(handle);
    this.byHandle.delete(handle);
    const message = id ? this.messages.get(id) : undefined;
    if (message && message.handle === handle) this.messages.delete(message.id);
  }

  /** Makes a delivered message visible at once (a failed batch item in the embedded runtime). */
  release(handle: string, delayMs = 0): void {
    const id = this.byHandle.get(handle);
    const message = id ? this.messages.get(id) : undefined;
    if (message && message.handle === handle && message.visibleAt > this.now() + delayMs) message.visibleAt = this.now() + delayMs;
    this.wake();
  }

  /** The bodies of the messages not yet deleted (visible, delayed or in flight). */
  bodies(): string[] {
    return [...this.messages.values()].map((m) => m.body);
  }

  /**
   * Makes the messages `which` selects among those sent with a delay and never received yet
   * visible at once. The embedded runtime uses it to wake a waiting commit when a task of its own
   * request completes, instead of leaving it to its backoff (in one process, progress is known).
   */
  expedite(which: (body: string) => boolean): number {
    const now = this.now();
    let count = 0;
    for (const message of this.messages.values()) {
      if (message.receiveCount === 0 && message.visibleAt > now && which(message.body)) {
        message.visibleAt = now;
        count++;
      }
    }
    if (count) this.wake();
    return count;
  }

  /** Messages not yet deleted (visible or in flight). */
  get size(): number {
    return this.messages.size;
  }

  /** When the next invisible message becomes visible (ms since epoch), or undefined. */
  nextVisibleAt(): number | undefined {
    let next: number | undefined;
    for (const m of this.messages.values()) if (next === undefined || m.visibleAt < next) next = m.visibleAt;
    return next;
  }

  /** Resolves when something is sent or released (or after `ms`). */
  waitForActivity(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.waiters.add(done);
    });
  }

  /** Wakes everything waiting in waitForActivity (a consumer that should look again, or stop). */
  wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}
