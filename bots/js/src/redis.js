// Reporting straight into Longrun's Redis: each call runs the server's own update.lua
// (server/requests/lifecycle.py's patches, byte for byte the same script), one EVALSHA round
// trip; ioredis' defineCommand loads the script with EVAL when Redis answers NOSCRIPT.
import Redis from "ioredis";
import { CONTRACT, message } from "./contract.js";
import {
  completedEvent, failedEvent, inputRequiredEvent, otpRequiredEvent, progressEvent, stillAsking,
} from "./events.js";
import { Keys } from "./keys.js";
import { enqueueCheckOtp } from "./rq.js";
import { loadScript } from "./scripts.js";

const OTP_STEP_SERVICES = new Set(CONTRACT.otp_step_services);

/** The settings a reporter reads from the environment, as the Python server reads them. */
export function settingsFromEnv(env = process.env) {
  const num = (name, fallback) => (env[name] ? Number(env[name]) : fallback);
  return {
    redisUrl: env.REDIS_URL || "redis://127.0.0.1:6379/0",
    prefix: env.KEY_PREFIX || "",
    ttl: num("REQUEST_TTL", CONTRACT.request_ttl),
    otpMaxAttempts: num("OTP_MAX_ATTEMPTS", CONTRACT.otp_max_attempts),
    otpResendInterval: num("OTP_RESEND_INTERVAL", CONTRACT.otp_resend_interval),
    sharded: ["1", "true", "yes", "on"].includes((env.REDIS_CLUSTER || "").toLowerCase()),
    timeScale: num("TIME_SCALE", 1),
    rqPrefix: env.RQ_KEY_PREFIX || "rq",
  };
}

export class RedisReporter {
  /**
   * @param {import("ioredis").Redis} redis a client on Longrun's Redis (not closed by close())
   * @param {object} [options] see index.d.ts
   */
  constructor(redis, options = {}) {
    const defaults = settingsFromEnv({});
    this.redis = redis;
    this.keys = new Keys(options.prefix ?? defaults.prefix);
    this.ttl = options.ttl ?? defaults.ttl;
    this.otpMaxAttempts = options.otpMaxAttempts ?? defaults.otpMaxAttempts;
    this.otpResendInterval = options.otpResendInterval ?? defaults.otpResendInterval;
    this.sharded = options.sharded ?? false;
    this.timeScale = options.timeScale ?? defaults.timeScale;
    this.rqPrefix = options.rqPrefix ?? defaults.rqPrefix;
    this.onOtpReady = options.onOtpReady ?? null;
    this.owned = false;
    if (typeof redis.longrunUpdate !== "function") {
      redis.defineCommand("longrunUpdate", { numberOfKeys: 7, lua: loadScript("update") });
    }
  }

  /** A reporter on its own connection, configured from the environment (REDIS_URL, KEY_PREFIX, ...). */
  static connect(options = {}) {
    const settings = { ...settingsFromEnv(), ...options };
    // Bounded, as the Python SDK's client (connect 2 s, every command 5 s): a path that drops
    // traffic silently makes a report fail (the bot can retry it), never hang for ever.
    const redis = new Redis(settings.redisUrl, {
      lazyConnect: false, connectTimeout: 2000, commandTimeout: 5000, maxRetriesPerRequest: 2,
    });
    const reporter = new RedisReporter(redis, settings);
    reporter.owned = true;
    return reporter;
  }

  async close() {
    if (this.owned) await this.redis.quit();
  }

  /**
   * One atomic change (RecordStore.update): the script merges the patch, enforces the state
   * machine, bumps seq, refreshes the TTL and publishes.
   * @returns {Promise<{outcome: string, record: object | null, otpReady: boolean, previousStatus: string | null}>}
   */
  async update(h, patch, control = {}) {
    const reply = await this.redis.longrunUpdate(
      ...this.keys.changeKeys(h),
      JSON.stringify(patch),
      JSON.stringify({ ttl: this.ttl, ...control }),
      this.keys.channel(h),
      h,
      this.sharded ? this.keys.shardChannel(h) : "",
    );
    return {
      outcome: String(reply[0]),
      record: reply.length > 1 && reply[1] ? JSON.parse(reply[1]) : null,
      otpReady: reply.length > 2 && String(reply[2]) === "1",
      previousStatus: reply.length > 3 ? String(reply[3]) : null,
    };
  }

  /** The stored record (private fields included), null if absent or unreadable. */
  async get(h) {
    const raw = await this.redis.get(this.keys.record(h));
    try {
      const rec = raw === null ? null : JSON.parse(raw);
      return rec && typeof rec === "object" && !Array.isArray(rec) ? rec : null;
    } catch {
      return null;
    }
  }

  /** Report how far along the bot is (0-100; Longrun never lets the bar go back). */
  async progress(h, progress, { step, message: text } = {}) {
    const event = progressEvent(progress, { step, message: text });
    const patch = { progress: event.progress, retrying: false };
    if (event.step !== undefined) patch.step = event.step;
    if (event.message !== undefined) {
      patch.current_message = event.message;
      patch.message_key = null;
    }
    return (await this.update(h, patch)).outcome === "ok";
  }

  /** The bot sent a code to the person's phone and now waits for it (Lifecycle.ask_otp). */
  async otpRequired(h, otp = {}) {
    return await this.#askOtp(h, otpRequiredEvent(otp).otp, "");
  }

  /**
   * The bot asks the person something and waits for the answer (Lifecycle.ask_input): a captcha,
   * a choice, a yes/no, a text; a `code` prompt is the OTP (otpRequired, under the prompt's id).
   * The answer comes to the bot's /run as `input: {id, value}`.
   */
  async inputRequired(h, input) {
    const prompt = inputRequiredEvent(input).input;
    if (prompt.kind === "code") {
      const { length, destination_hint, expires_in, attempts_left, error } = prompt;
      return await this.#askOtp(h, { length, destination_hint, expires_in, attempts_left, error }, prompt.id);
    }
    const note = prompt.error ? message("input_wrong") : message(`input_${prompt.kind}`);
    const exhausted = { status: "failed", error: CONTRACT.messages.input_exhausted, retrying: false };
    const result = await this.update(
      h,
      { status: "waiting_input", input_request: prompt, ...note },
      {
        input: {
          id: prompt.id,
          expires_in: prompt.expires_in,
          max_attempts: this.otpMaxAttempts,
          exhausted: { ...exhausted, ...message("input_exhausted") },
        },
      },
    );
    return result.outcome === "ok" && stillAsking("input_required", result.record?.status);
  }

  // The record shows the code's prompt twice, as the server writes it: `otp_data` as always and
  // `input_request` of kind code (Prompt.of_otp), under `promptId` when the bot asked with
  // inputRequired (whose answer it then gets as `input`; "" for otpRequired's `otp`).
  async #askOtp(h, prompt, promptId) {
    const otpData = { length: prompt.length, destination_hint: prompt.destination_hint, error: prompt.error ?? null };
    if (prompt.attempts_left !== undefined) otpData.attempts_left = prompt.attempts_left;
    const inputRequest = { id: promptId || "code", kind: "code", label: "", secret: true, expires_in: prompt.expires_in };
    if (prompt.attempts_left !== undefined) inputRequest.attempts_left = prompt.attempts_left;
    if (prompt.error) inputRequest.error = prompt.error;
    inputRequest.length = prompt.length;
    inputRequest.destination_hint = prompt.destination_hint;
    const note = prompt.error ? message("otp_wrong") : message("otp", { destination: prompt.destination_hint });
    const patch = { status: "waiting_otp", otp_data: otpData, input_request: inputRequest, ...note };
    // Like the Python SDK: the record says which service, the catalog whether it has an otp step.
    const rec = await this.get(h);
    const slug = String(rec?.service_slug ?? "");
    if (OTP_STEP_SERVICES.has(slug)) patch.step = "otp";
    const exhausted = { status: "failed", error: CONTRACT.messages.otp_exhausted, retrying: false };
    const result = await this.update(h, patch, {
      otp: {
        expires_in: prompt.expires_in,
        resend_in: this.otpResendInterval,
        max_attempts: this.otpMaxAttempts,
        exhausted: { ...exhausted, ...message("otp_exhausted") },
      },
      checking: CONTRACT.messages.checking,
      private: { code_prompt: promptId },
    });
    if (result.outcome === "ok" && result.otpReady) await this.#otpReady(h, Number(result.record?.seq ?? 0), slug);
    return result.outcome === "ok" && stillAsking("otp_required", result.record?.status);
  }

  async completed(h, result) {
    const event = completedEvent(result);
    const patch = { status: "completed", result_data: event.result, retrying: false, ...message("done") };
    return (await this.update(h, patch)).outcome === "ok";
  }

  async failed(h, error) {
    const event = failedEvent(error);
    const patch = { status: "failed", error: event.error, retrying: false, ...message("failed") };
    return (await this.update(h, patch)).outcome === "ok";
  }

  // The person typed the code before the bot asked: the script moved the request on to
  // "checking" and the code waits in its key. As the Python SDK does, a worker is handed the
  // check (RQ's check_otp job, the one the server would have queued), which reads the code
  // once and calls the bot's /run with it; a bot that would rather take the code itself passes
  // onOtpReady (and reads it with takeOtp).
  async #otpReady(h, seq, slug) {
    if (this.onOtpReady) {
      await this.onOtpReady(h, seq);
      return;
    }
    await enqueueCheckOtp(this.redis, h, seq, slug, {
      prefix: this.keys.prefix,
      rqPrefix: this.rqPrefix,
      timeScale: this.timeScale,
    });
  }

  /** The code the person typed, removed as it is read (a code reaches the bot once); null if none. */
  async takeOtp(h) {
    return await this.redis.getdel(this.keys.otp(h));
  }
}
