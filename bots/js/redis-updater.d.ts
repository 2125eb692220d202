// The original bots' RedisUpdater, kept call for call: each method resolves true when applied
// and false when ignored or on any error (logged); none of them throws.
import type { OtpPrompt, Reporter } from "./index.js";

export class RedisUpdater {
  /** Default: a reporter from the environment (BOT_REPORT_MODE, REDIS_URL, KEY_PREFIX, ...), made on first use. */
  constructor(reporter?: Reporter);
  updateProgress(hash: string, progress: number, step?: string, message?: string): Promise<boolean>;
  /** Only the prompt fields are kept (length, destination_hint, expires_in, attempts_left, error). */
  markAsOtpRequired(hash: string, otpData?: OtpPrompt & Record<string, unknown>): Promise<boolean>;
  markAsCompleted(hash: string, resultData: Record<string, unknown>): Promise<boolean>;
  markAsFailed(hash: string, errorMessage: string, errorData?: Record<string, unknown>): Promise<boolean>;
  /** The public record; null if absent, or when reporting over HTTP. */
  getRequestStatus(hash: string): Promise<Record<string, unknown> | null>;
  close(): Promise<void>;
}

declare const redisUpdater: RedisUpdater;
export default redisUpdater;
