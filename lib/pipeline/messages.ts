/**
 * The task protocol: versioned, validated JSON messages between ingress, fan-out, workers and
 * export, and the steps of a scheduled sync, which fan-out hands to itself. Every message is
 * small (well under the queue's MaximumMessageSize): manifests travel by digest and are re-read
 * from the source, or re-derived by re-running the (deterministic) planner; only small rewritten
 * manifests travel inline.
 *
 * Version 1. A message with another `v`, an unknown `type` or a bad field is rejected with a
 * reason (the worker sends it to the dead-letter queue instead of retrying it).
 */
import { z } from 'zod';
import { isDigest } from '../digest.js';
import { ErrorCodes, OciRelayError } from '../errors.js';
import { isValidRepositoryPath, isValidTag, parseReference } from '../ref/index.js';

export const PROTOCOL_VERSION = 1 as const;

/**
 * The largest message ocirelay sends, in bytes. SQS allows 256 KiB; staying at 64 KiB leaves room
 * for attributes and makes a message that grows without bound (a manifest carried by mistake)
 * fail loudly in tests rather than in production.
 */
export const MAX_MESSAGE_BYTES = 64 * 1024;

/**
 * Rewritten manifests up to this size may travel inline; larger ones, and any whose commit
 * message would exceed MAX_MESSAGE_BYTES with them, are re-derived by the planner.
 */
export const MAX_INLINE_MANIFEST_BYTES = 32 * 1024;

/**
 * A request's annotations, serialised, take at most this much: every task carries them, and
 * with every other field at its limit the largest task stays under MAX_MESSAGE_BYTES.
 */
export const MAX_ANNOTATIONS_BYTES = 16 * 1024;

const digest = z.string().refine(isDigest, 'is not a sha256/sha512 digest');
const reference = z.string().min(1).max(600).refine((r) => {
  try {
    parseReference(r);
    return true;
  } catch {
    return false;
  }
}, 'is not a valid image reference');
const repository = z.object({ registry: z.string().min(1).max(255), repository: z.string().min(1).max(255) }).strict();
const platform = z.string().max(100).regex(/^[a-z0-9_.-]+\/[a-z0-9_.-]+(\/[a-z0-9_.-]+)?$/i, 'is not os/arch[/variant]');

export const ExportSpecSchema = z
  .object({
    format: z.enum(['layers', 'oci', 'docker']).default('layers'),
    /** `s3://bucket/key` (placeholders already expanded). */
    destination: z.string().min(1).max(1024),
    platform: platform.optional(),
    noConfig: z.boolean().optional(),
  })
  .strict();

/** What to copy: ingress makes these from events and rules; fan-out reads them. */
export const ReplicationRequestSchema = z
  .object({
    v: z.literal(PROTOCOL_VERSION),
    type: z.literal('replicate'),
    /** Correlates every task of one request in logs (event id / delivery id when there is one). */
    id: z.string().min(1).max(200),
    source: reference,
    target: reference,
    mode: z.enum(['registry-defaults', 'prefer-multiarch', 'normalise-to-multiarch']).default('prefer-multiarch'),
    platforms: z.array(platform).max(64).default([]),
    annotations: z
      .record(z.string().min(1).max(256), z.string().max(4096))
      .refine((a) => Buffer.byteLength(JSON.stringify(a)) <= MAX_ANNOTATIONS_BYTES, `take more than ${MAX_ANNOTATIONS_BYTES} bytes serialised`)
      .default({}),
    referrers: z.boolean().default(false),
    includeForeignLayers: z.boolean().default(false),
    export: ExportSpecSchema.optional(),
  })
  .strict();

const blobDescriptor = z.object({ digest, size: z.number().int().nonnegative(), mediaType: z.string().min(1).max(255) }).strict();

/** Carried by every task so that a worker knows the request's options without another lookup. */
const requestRef = ReplicationRequestSchema.omit({ v: true, type: true, export: true });

/**
 * One platform of an index: the worker re-reads the child by digest, enqueues the blob tasks of
 * the blobs this platform owns (a blob shared with an earlier platform is owned by that one), and
 * the commit of the child manifest.
 */
export const ImageTaskSchema = z
  .object({
    v: z.literal(PROTOCOL_VERSION),
    type: z.literal('image'),
    request: requestRef,
    /** The child's digest at the source. */
    sourceDigest: digest,
    /** The digest the child will have in the target (differs when rewritten). */
    targetDigest: digest,
    platform: z.string().max(200).optional(),
    /** Blobs that an earlier platform of the same index copies. */
    notOwned: z.array(digest).max(256).default([]),
  })
  .strict();

/** Upload state of a blob continued from an earlier invocation. */
const continuation = z
  .object({
    /** The upload session URL (absolute). */
    location: z.string().url().max(4096),
    /** Invocations this blob has taken so far. */
    hops: z.number().int().positive(),
    /** The SHA-256 state of the bytes the session held when this task was made (resumable-hash.ts). */
    hash: z.string().max(200).optional(),
  })
  .strict();

/** One large blob, or a batch of small ones, to stream from source to target. */
export const BlobTaskSchema = z
  .object({
    v: z.literal(PROTOCOL_VERSION),
    type: z.literal('blob'),
    requestId: z.string().min(1).max(200),
    source: repository,
    target: repository,
    blobs: z.array(blobDescriptor).min(1).max(64),
    continuation: continuation.optional(),
  })
  .strict();

/** Where the bytes of a manifest to commit come from. */
const manifestContent = z.discriminatedUnion('from', [
  /** Verbatim: GET the source manifest by digest. */
  z.object({ from: z.literal('source'), digest }).strict(),
  /** Small (verbatim or rewritten): the bytes, base64, checked against the digest by the worker. */
  z.object({ from: z.literal('inline'), base64: z.string().max(Math.ceil((MAX_INLINE_MANIFEST_BYTES * 4) / 3) + 4) }).strict(),
  /** Rewritten and large: re-run the planner on the request and take the manifest with this digest. */
  z.object({ from: z.literal('derive') }).strict(),
]);

/**
 * A barrier: PUT one manifest once everything it references is in the target (checked by HEAD
 * from the manifest's own references), then move the tags. Retried with backoff while not ready.
 */
export const CommitTaskSchema = z
  .object({
    v: z.literal(PROTOCOL_VERSION),
    type: z.literal('commit'),
    request: requestRef,
    digest,
    mediaType: z.string().min(1).max(255),
    size: z.number().int().positive(),
    content: manifestContent,
    /** Tags that point at this manifest once it is committed (the root's tag, moved last). */
    tags: z.array(z.string().min(1).max(128)).max(16).default([]),
    /** After the commit, enqueue this export (the request asked for one). */
    export: ExportSpecSchema.optional(),
    /**
     * Set once the commit has found its content incomplete: the not-ready commit is sent again
     * as a new, delayed message carrying how often it has waited and until when it may (ms since
     * the epoch), so that waiting never uses up the queue's receive count.
     */
    wait: z.object({ attempt: z.number().int().positive().max(1_000_000), deadline: z.number().int().positive() }).strict().optional(),
  })
  .strict();

export const ExportTaskSchema = z
  .object({
    v: z.literal(PROTOCOL_VERSION),
    type: z.literal('export'),
    requestId: z.string().min(1).max(200),
    /** The image to export (by digest, so that a moving tag cannot change what is archived). */
    source: reference,
    spec: ExportSpecSchema,
  })
  .strict();

/** Tags one repository step of a sync compares at most; more are handed on in batches of this size. */
export const MAX_SYNC_TAGS = 100;

/** Catalog pages one rule's sync may take (a loop in a registry's pagination ends here). */
export const MAX_SYNC_PAGES = 100_000;

/**
 * One step of a scheduled sync (docs/RULES.md), handled by fan-out, which hands each next step
 * to itself as a message of its own:
 * - without `repository`: one page of a rule's repositories (the catalog from `cursor`, or from
 *   the start); each repository the rule selects becomes a repository step, the next page a
 *   step of its own;
 * - with `repository`: its tags are listed, filtered and compared with the target, and what
 *   differs is requested (a replication request per tag); with `tags`, exactly these (selected
 *   by an earlier listing of a repository with more than MAX_SYNC_TAGS) are compared.
 * The rule is named by its place in the configuration and its name, both checked: the hosts and
 * filters come from the configuration, never from the message.
 */
export const SyncMessageSchema = z
  .object({
    v: z.literal(PROTOCOL_VERSION),
    type: z.literal('sync'),
    /** The run (the schedule's event); the replication requests it makes are named after it. */
    id: z.string().min(1).max(200),
    rule: z.object({ index: z.number().int().nonnegative().max(9_999), name: z.string().min(1).max(100).optional() }).strict(),
    repository: z.string().refine(isValidRepositoryPath, 'is not a repository path').optional(),
    /** Rule step: the catalog page to list (from the registry's Link header), absent for the first. */
    cursor: z.string().min(1).max(2048).optional(),
    /** Rule step: which page this is (1 for the first). */
    page: z.number().int().positive().max(MAX_SYNC_PAGES).optional(),
    /** Repository step: compare exactly these tags. */
    tags: z.array(z.string().refine(isValidTag, 'is not a tag')).min(1).max(MAX_SYNC_TAGS).optional(),
  })
  .strict()
  .superRefine((m, ctx) => {
    if (m.repository === undefined && m.tags) ctx.addIssue({ code: 'custom', path: ['tags'], message: 'is only for a repository step' });
    if (m.repository !== undefined && (m.cursor !== undefined || m.page !== undefined)) ctx.addIssue({ code: 'custom', path: [m.cursor !== undefined ? 'cursor' : 'page'], message: 'is only for a rule step' });
  });

export const TaskSchema = z.discriminatedUnion('type', [ImageTaskSchema, BlobTaskSchema, CommitTaskSchema, ExportTaskSchema]);

export type ReplicationRequest = z.infer<typeof ReplicationRequestSchema>;
export type ReplicationRequestInput = z.input<typeof ReplicationRequestSchema>;
export type RequestRef = z.infer<typeof requestRef>;
export type ImageTask = z.infer<typeof ImageTaskSchema>;
export type BlobTask = z.infer<typeof BlobTaskSchema>;
export type CommitTask = z.infer<typeof CommitTaskSchema>;
export type ExportTask = z.infer<typeof ExportTaskSchema>;
export type ExportSpec = z.infer<typeof ExportSpecSchema>;
export type Task = z.infer<typeof TaskSchema>;
export type SyncMessage = z.infer<typeof SyncMessageSchema>;

export class InvalidMessageError extends OciRelayError {
  constructor(reason: string) {
    super(ErrorCodes.InvalidMessage, `invalid message: ${reason}`);
  }
}

function describe(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'does not match the schema';
  const path = issue.path.length ? issue.path.join('.') : '(message)';
  return `${path} ${issue.message}`;
}

function parseWith<T>(schema: z.ZodType<T>, input: unknown, what: string): T {
  let value = input;
  if (typeof input === 'string') {
    if (Buffer.byteLength(input) > MAX_MESSAGE_BYTES * 4) throw new InvalidMessageError(`${what} is ${Buffer.byteLength(input)} bytes`);
    try {
      value = JSON.parse(input);
    } catch {
      throw new InvalidMessageError(`${what} is not JSON`);
    }
  }
  if (typeof value === 'object' && value !== null && 'v' in value && (value as { v: unknown }).v !== PROTOCOL_VERSION) {
    throw new InvalidMessageError(`${what} has protocol version ${JSON.stringify((value as { v: unknown }).v)}, this worker speaks ${PROTOCOL_VERSION}`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new InvalidMessageError(`${what}: ${describe(parsed.error)}`);
  return parsed.data;
}

export function parseTask(input: unknown): Task {
  return parseWith(TaskSchema, input, 'task');
}

export function parseRequest(input: unknown): ReplicationRequest {
  return parseWith(ReplicationRequestSchema, input, 'replication request');
}

export function parseSyncMessage(input: unknown): SyncMessage {
  return parseWith(SyncMessageSchema, input, 'sync message');
}

/** What fan-out is invoked with: a replication request, or a step of a sync (`type: "sync"`). */
export function parseFanoutMessage(input: unknown): ReplicationRequest | SyncMessage {
  let value = input;
  if (typeof input === 'string') {
    try {
      value = JSON.parse(input);
    } catch {
      // parseRequest says why.
    }
  }
  const isSync = typeof value === 'object' && value !== null && (value as { type?: unknown }).type === 'sync';
  return isSync ? parseSyncMessage(input) : parseRequest(input);
}

/** Serialises a message, refusing one over MAX_MESSAGE_BYTES (a bug, never user input). */
export function serialise(message: Task | ReplicationRequest | SyncMessage): string {
  const body = JSON.stringify(message);
  if (Buffer.byteLength(body) > MAX_MESSAGE_BYTES) {
    throw new OciRelayError(ErrorCodes.InvalidMessage, `a ${message.type} message of ${Buffer.byteLength(body)} bytes exceeds the ${MAX_MESSAGE_BYTES}-byte limit`);
  }
  return body;
}

export function requestRefOf(request: ReplicationRequest): RequestRef {
  const { v: _v, type: _type, export: _export, ...rest } = request;
  return rest;
}
