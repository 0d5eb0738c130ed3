/**
 * What every webhook parser produces: push events, in the registry's own words. Everything in an
 * event is a hint from an untrusted payload: the registry host is only matched against the rules
 * (never contacted), the repository is re-validated, and tags are re-resolved at the source the
 * matching rule names.
 */

export interface PushEvent {
  /** The registry host as the payload names it (normalised), when it names one. */
  registry?: string;
  /** The repository path as the payload names it (normalised, validated). */
  repository: string;
  tag?: string;
  digest?: string;
  /** The manifest media type, when the payload says. */
  mediaType?: string;
  /** The event's own id (for de-duplicating replays), when it has one. */
  id?: string;
}

export interface ParsedDelivery {
  events: PushEvent[];
  /** Events in the payload that are not manifest pushes (pulls, deletes, blob uploads, scans). */
  ignored: number;
  /** The delivery's id (a header such as X-GitHub-Delivery, or the envelope's), for replay de-duplication. */
  deliveryId?: string;
}

/** A parser gets the JSON body and the request headers (lowercased names). */
export type DeliveryParser = (body: unknown, headers: Readonly<Record<string, string | undefined>>) => ParsedDelivery;

/** A payload that is JSON but not of the expected shape. */
export class PayloadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PayloadError';
  }
}
