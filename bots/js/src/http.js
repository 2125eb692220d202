// Reporting over signed HTTP events: POST {baseUrl}/api/bot/requests/{hash}/events, signed
// with the Standard Webhooks scheme by the `standardwebhooks` package (what HttpReporter in
// bots/sdk.py sends). A retry resends the same body under the same webhook-id, so an event
// the server applied but whose answer was lost is never applied twice.
import { randomBytes } from "node:crypto";
import { Webhook } from "standardwebhooks";
import {
  ReportError, completedEvent, failedEvent, inputRequiredEvent, otpRequiredEvent, progressEvent, stillAsking,
} from "./events.js";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A fresh event id: `evt_` + 128 random bits, URL-safe (as the Python SDK mints them). */
export function newEventId() {
  return "evt_" + randomBytes(16).toString("base64url");
}

export class HttpReporter {
  /**
   * @param {object} options see index.d.ts
   */
  constructor({ baseUrl, secret, timeout = 10_000, retries = 3, backoff = 250, fetch: fetchImpl } = {}) {
    if (!baseUrl) throw new TypeError("baseUrl is required (Longrun's PUBLIC_URL)");
    if (!secret) throw new TypeError("secret is required (the first of BOT_WEBHOOK_SECRET)");
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.webhook = new Webhook(secret);
    this.timeout = timeout;
    this.retries = retries;
    this.backoff = backoff;
    this.fetch = fetchImpl ?? globalThis.fetch;
  }

  /** A reporter configured from the environment: PUBLIC_URL (or PORT) and BOT_WEBHOOK_SECRET. */
  static fromEnv(env = process.env, options = {}) {
    const baseUrl = env.PUBLIC_URL || `http://127.0.0.1:${env.PORT || 8080}`;
    const secret = (env.BOT_WEBHOOK_SECRET || "").split(/\s+/).filter(Boolean)[0];
    return new HttpReporter({ baseUrl, secret, ...options });
  }

  async close() {}

  /**
   * Send one event. True when applied, false when the server ignored it (the request had
   * already finished). Network errors, timeouts, 429 and 5xx are retried with the same id;
   * other refusals throw a ReportError.
   * @param {string} h @param {object} event @param {{eventId?: string}} [options]
   */
  async report(h, event, { eventId = newEventId() } = {}) {
    const body = JSON.stringify(event);
    const url = `${this.baseUrl}/api/bot/requests/${encodeURIComponent(h)}/events`;
    let lastError;
    for (let attempt = 0; attempt <= this.retries; attempt++) {
      if (attempt > 0) await sleep(this.backoff * 2 ** (attempt - 1));
      // Signed afresh each time: the server refuses timestamps more than 5 minutes off.
      const timestamp = Math.floor(Date.now() / 1000);
      const signature = this.webhook.sign(eventId, new Date(timestamp * 1000), body);
      let resp;
      try {
        resp = await this.fetch(url, {
          method: "POST",
          body,
          headers: {
            "content-type": "application/json",
            "webhook-id": eventId,
            "webhook-timestamp": String(timestamp),
            "webhook-signature": signature,
          },
          signal: AbortSignal.timeout(this.timeout),
        });
      } catch (error) {
        lastError = error;
        continue;
      }
      const answer = await resp.json().catch(() => ({}));
      if (resp.status === 202) return (answer?.applied ?? true) && stillAsking(event.type, answer?.status);
      const code = answer?.error?.code;
      // Our earlier attempt got through and only its answer was lost.
      if (resp.status === 409 && code === "replayed_event" && attempt > 0) return true;
      // Ignored, as over Redis: the request has expired (or never was), or has finished.
      if ((resp.status === 404 && code === "not_found") || (resp.status === 409 && code === "state_conflict")) {
        return false;
      }
      const reason = answer?.error?.message ?? resp.statusText;
      lastError = new ReportError(`${resp.status}: ${reason}`, resp.status, code);
      if (resp.status !== 429 && resp.status < 500) throw lastError;
    }
    throw lastError instanceof ReportError ? lastError : new ReportError(`could not reach Longrun: ${lastError}`);
  }

  async progress(h, progress, { step, message, eventId } = {}) {
    return this.report(h, progressEvent(progress, { step, message }), { eventId });
  }

  async otpRequired(h, otp = {}, { eventId } = {}) {
    return this.report(h, otpRequiredEvent(otp), { eventId });
  }

  /** The bot needs something else from the person (a captcha, a choice, a confirmation, text). */
  async inputRequired(h, input, { eventId } = {}) {
    return this.report(h, inputRequiredEvent(input), { eventId });
  }

  async completed(h, result, { eventId } = {}) {
    return this.report(h, completedEvent(result), { eventId });
  }

  async failed(h, error, { eventId } = {}) {
    return this.report(h, failedEvent(error), { eventId });
  }
}
