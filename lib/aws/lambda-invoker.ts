/**
 * The Invoker port on Lambda: an asynchronous invoke (InvocationType Event). Lambda queues the
 * event, retries a failed invocation twice, then sends it to the function's on-failure
 * destination (configured by the stack: a dead-letter queue).
 */
import { InvokeCommand, type LambdaClient } from '@aws-sdk/client-lambda';
import { ErrorCodes, OciRelayError } from '../errors.js';
import type { Invoker } from '../ports/invoker.js';

export class LambdaInvoker implements Invoker {
  constructor(
    private readonly client: LambdaClient,
    readonly functionName: string,
  ) {}

  async invokeAsync(payload: string): Promise<void> {
    const result = await this.client.send(new InvokeCommand({ FunctionName: this.functionName, InvocationType: 'Event', Payload: Buffer.from(payload) }));
    if (result.StatusCode !== 202) throw new OciRelayError(ErrorCodes.Network, `asynchronous invoke of ${this.functionName} answered ${result.StatusCode}`, { retryable: true });
  }
}
