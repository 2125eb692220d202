// A drop-in for the original bots' RedisUpdater (GET, edit, SETEX, PUBLISH): the same
// method names, arguments and true/false answers, but each call is one atomic script run
// (or a signed event, with BOT_REPORT_MODE=http), so an existing bot changes one import:
//
//   import redisUpdater from "longrun-bot/redis-updater";
import { ReportError, otpPrompt } from "./events.js";
import { reporterFromEnv } from "./reporter.js";

const PROMPT_FIELDS = ["length", "destination_hint", "expires_in", "attempts_left", "error"];

export class RedisUpdater {
  /** @param {import("../index.js").Reporter} [reporter] default: one from the environment, made on first use */
  constructor(reporter) {
    this.reporter = reporter ?? null;
  }

  #report() {
    this.reporter ??= reporterFromEnv();
    return this.reporter;
  }

  async #call(what, hash, fn) {
    try {
      return await fn(this.#report());
    } catch (error) {
      console.error(`longrun-bot: could not ${what} for ${hash}: ${error?.message ?? error}`);
      return false;
    }
  }

  /** @returns {Promise<boolean>} true when applied; false when ignored (finished, expired) or on error */
  async updateProgress(hash, progress, step, message) {
    return this.#call("update progress", hash, (r) => r.progress(hash, progress, { step, message }));
  }

  /** otpData: `{length, destination_hint, expires_in, attempts_left}`; other fields are not shown to anyone. */
  async markAsOtpRequired(hash, otpData = {}) {
    const known = Object.fromEntries(PROMPT_FIELDS.filter((k) => otpData?.[k] != null).map((k) => [k, otpData[k]]));
    return this.#call("ask for the code", hash, (r) => r.otpRequired(hash, otpPrompt(known)));
  }

  async markAsCompleted(hash, resultData) {
    return this.#call("complete", hash, (r) => r.completed(hash, resultData ?? {}));
  }

  /** errorData is accepted for compatibility; the record keeps the message. */
  async markAsFailed(hash, errorMessage, errorData = {}) {
    void errorData;
    return this.#call("fail", hash, (r) => r.failed(hash, String(errorMessage)));
  }

  /** The public record (as the server shows it), null if absent. Over HTTP mode: not available (null). */
  async getRequestStatus(hash) {
    const reporter = this.#report();
    if (typeof reporter.get !== "function") return null;
    try {
      const rec = await reporter.get(hash);
      if (rec) delete rec._p;
      return rec;
    } catch (error) {
      if (!(error instanceof ReportError)) console.error(`longrun-bot: could not read ${hash}: ${error?.message}`);
      return null;
    }
  }

  async close() {
    if (this.reporter) await this.reporter.close();
    this.reporter = null;
  }
}

const redisUpdater = new RedisUpdater();
export default redisUpdater;
