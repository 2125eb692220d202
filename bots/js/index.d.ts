// Type declarations for longrun-bot (the implementation is plain ESM JavaScript in src/).
import type { Redis } from "ioredis";

/** What the bot says about the code it sent: never the code itself. */
export interface OtpPrompt {
  /** digits in the code, 4-10 (default 6) */
  length?: number;
  /** where the code went, e.g. "+98 912 *** **34" (at most 64 characters) */
  destination_hint?: string;
  /** seconds the code is valid, 10-3600 (default 120) */
  expires_in?: number;
  /** submissions the portal still allows, 0-100 */
  attempts_left?: number;
  /** why the previous code was refused, if it was */
  error?: string;
}

/** Any input from the person (DESIGN.md "Additions", issue 14): the prompt, never the answer. */
export type InputPrompt = {
  /** 1-64 letters, digits or _.:- ; the person's answer names it */
  id: string;
  label: string;
  /** answered like the SMS code (read once, never at rest); default true for captcha and code */
  secret?: boolean;
  /** seconds, 10-3600 (default 120) */
  expires_in?: number;
  /** answers the person has left (0-100); the server lowers it to what it allows */
  attempts_left?: number;
  /** why the previous answer was refused, shown to the person (at most 200 characters) */
  error?: string;
} & (
  | { kind: "captcha"; /** a data:image/png;base64,… URL, the PNG at most 64 KiB */ image: string; /** 1-32 */ length?: number }
  | { kind: "choice"; /** 2-20, distinct values (at most 64 characters; the label defaults to it) */ options: { value: string; label?: string }[] }
  | { kind: "confirm" }
  | { kind: "text"; /** 1-500 (default 100) */ max_length?: number; /** the whole answer must match it */ pattern?: string }
  | ({ kind: "code" } & OtpPrompt)
);

export const INPUT_KINDS: readonly ["captcha", "choice", "confirm", "text", "code"];

export interface ProgressOptions {
  step?: string;
  message?: string;
}

export interface EventOptions {
  /** the webhook-id: reuse one to make a resend idempotent (HTTP only; default a fresh `evt_…`) */
  eventId?: string;
}

/** The four calls every reporter has. Each resolves true when applied, false when ignored
 * (the request has already finished or expired). */
export interface Reporter {
  progress(requestHash: string, progress: number, options?: ProgressOptions): Promise<boolean>;
  otpRequired(requestHash: string, otp?: OtpPrompt): Promise<boolean>;
  completed(requestHash: string, result: Record<string, unknown>): Promise<boolean>;
  failed(requestHash: string, error: string): Promise<boolean>;
  close(): Promise<void>;
}

/** An event refused before sending (invalid) or by the server (`status`, `code`). */
export class ReportError extends Error {
  status?: number;
  code?: string;
}

export interface RedisReporterOptions {
  /** KEY_PREFIX of the Longrun deployment (default "") */
  prefix?: string;
  /** record TTL in seconds, REQUEST_TTL (default 1800) */
  ttl?: number;
  otpMaxAttempts?: number;
  otpResendInterval?: number;
  /** also publish on the request's sharded channel (REDIS_CLUSTER) */
  sharded?: boolean;
  /** multiplies the service's deadline in a queued check's RQ timeout, TIME_SCALE (default 1) */
  timeScale?: number;
  /** RQ_KEY_PREFIX (default "rq"; "{rq}" on a Redis Cluster) */
  rqPrefix?: string;
  /** The person typed the code before the bot asked. By default a worker is handed the check (the
   * RQ job the server queues, as the Python SDK does); with a hook the bot takes the code itself
   * (takeOtp) instead. */
  onOtpReady?: (requestHash: string, seq: number) => Promise<void> | void;
}

export interface UpdateResult {
  outcome: "ok" | "missing" | "terminal" | "conflict" | "not_due";
  record: Record<string, unknown> | null;
  otpReady: boolean;
  previousStatus: string | null;
}

/** Straight into Longrun's Redis through the server's own update.lua: one EVALSHA round trip
 * per call (otpRequired first reads the record, as the Python SDK does). */
export class RedisReporter implements Reporter {
  constructor(redis: Redis, options?: RedisReporterOptions);
  /** Its own connection, from REDIS_URL, KEY_PREFIX, REQUEST_TTL, OTP_MAX_ATTEMPTS, OTP_RESEND_INTERVAL. */
  static connect(options?: RedisReporterOptions & { redisUrl?: string }): RedisReporter;
  readonly redis: Redis;
  readonly keys: Keys;
  progress(requestHash: string, progress: number, options?: ProgressOptions): Promise<boolean>;
  otpRequired(requestHash: string, otp?: OtpPrompt): Promise<boolean>;
  completed(requestHash: string, result: Record<string, unknown>): Promise<boolean>;
  failed(requestHash: string, error: string): Promise<boolean>;
  /** Asks the person (Lifecycle.ask_input): status waiting_input with the prompt, or for a
   * `code` prompt waiting_otp under the prompt's id. The answer comes to the bot's /run as
   * `input: {id, value}`. False when the request has finished or expired. */
  inputRequired(requestHash: string, input: InputPrompt): Promise<boolean>;
  /** The code the person typed, removed as it is read; null if none. */
  takeOtp(requestHash: string): Promise<string | null>;
  /** The stored record, private fields included; null if absent. */
  get(requestHash: string): Promise<Record<string, unknown> | null>;
  /** One raw change through update.lua (what the four calls are built on). */
  update(requestHash: string, patch: Record<string, unknown>, control?: Record<string, unknown>): Promise<UpdateResult>;
  /** Quits the connection if connect() made it. */
  close(): Promise<void>;
}

export interface HttpReporterOptions {
  /** Longrun's PUBLIC_URL */
  baseUrl: string;
  /** a `whsec_…` secret: the first of BOT_WEBHOOK_SECRET */
  secret: string;
  /** ms per attempt (default 10000) */
  timeout?: number;
  /** retries after the first attempt, on network errors, timeouts, 429 and 5xx (default 3) */
  retries?: number;
  /** ms before the first retry, doubled each time (default 250) */
  backoff?: number;
  fetch?: typeof fetch;
}

/** Standard Webhooks-signed events to POST {baseUrl}/api/bot/requests/{hash}/events. */
export class HttpReporter implements Reporter {
  constructor(options: HttpReporterOptions);
  /** From PUBLIC_URL (or PORT) and BOT_WEBHOOK_SECRET. */
  static fromEnv(env?: Record<string, string | undefined>, options?: Partial<HttpReporterOptions>): HttpReporter;
  report(requestHash: string, event: Record<string, unknown>, options?: EventOptions): Promise<boolean>;
  progress(requestHash: string, progress: number, options?: ProgressOptions & EventOptions): Promise<boolean>;
  otpRequired(requestHash: string, otp?: OtpPrompt, options?: EventOptions): Promise<boolean>;
  /** `{"type": "input_required", "input": {...}}`, the prompt checked before it is sent. */
  inputRequired(requestHash: string, input: InputPrompt, options?: EventOptions): Promise<boolean>;
  completed(requestHash: string, result: Record<string, unknown>, options?: EventOptions): Promise<boolean>;
  failed(requestHash: string, error: string, options?: EventOptions): Promise<boolean>;
  close(): Promise<void>;
}

/** BOT_REPORT_MODE=http: an HttpReporter; otherwise a RedisReporter. */
export function reporterFromEnv(env?: Record<string, string | undefined>): HttpReporter | RedisReporter;

export function settingsFromEnv(env?: Record<string, string | undefined>): Required<
  Omit<RedisReporterOptions, "onOtpReady">
> & { redisUrl: string };

export function newEventId(): string;
export function inputPrompt(value: InputPrompt): InputPrompt & { secret: boolean; expires_in: number };
/** Queue the RQ job that relays a code typed early (what RedisReporter does without onOtpReady). */
export function enqueueCheckOtp(
  redis: Redis,
  requestHash: string,
  seq: number,
  serviceSlug: string,
  options?: { prefix?: string; rqPrefix?: string; timeScale?: number },
): Promise<string>;
export function otpPrompt(value?: OtpPrompt): Required<Omit<OtpPrompt, "attempts_left" | "error">> & OtpPrompt;

/** Redis key and channel names, as server/record/keys.py names them. */
export class Keys {
  constructor(prefix?: string);
  readonly prefix: string;
  record(requestHash: string): string;
  channel(requestHash: string): string;
  shardChannel(requestHash: string): string;
  otp(requestHash: string): string;
  log(requestHash: string): string;
  shard(requestHash: string): number;
  archive(shard: number): string;
  inflight(shard: number): string;
  counts(shard: number): string;
  otpWaits(shard: number): string;
  changeKeys(requestHash: string): string[];
}

/** A server script's full text (its --!include files, then itself) and its SHA1. */
export function loadScript(name: string, dir?: string): string;
export function scriptSha(text: string): string;

export { RedisUpdater } from "./redis-updater.js";
