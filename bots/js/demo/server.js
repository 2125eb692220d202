// The Node.js demo bot (`node bots/js/demo/server.js`, the Procfile's `nodebot`): serves the
// catalog's parcel-tracking service over the bot API (DESIGN.md, "Bot API") and reports through
// the Node SDK: straight into Redis (the server's own update.lua), or signed HTTP events with
// BOT_REPORT_MODE=http. Longrun's workers reach it through BOT_API_URLS.
//
// POST /services/parcel-tracking/run answers 202 at once and works in the background; calls
// with the same Idempotency-Key share one execution and one answer. .../cancel stops it,
// .../resend-otp says there is no code. GET /demo/calls?requestHash= (how often each key was
// called, executions started, whether one is running: for tests), GET /healthz.
//
// Environment: NODE_BOT_PORT (9998), HOST, BOT_SPEED (divides every delay), and what the SDK
// reads (BOT_REPORT_MODE, REDIS_URL, KEY_PREFIX, REQUEST_TTL, PUBLIC_URL, BOT_WEBHOOK_SECRET).
import { createServer } from "node:http";
import { reporterFromEnv } from "longrun-bot";
import { ParcelRun } from "./parcel.js";

export const SLUG = "parcel-tracking";
const MAX_BODY = 64 * 1024;
const MAX_KEPT = 20_000;
const HASH = /^[A-Za-z0-9_-]{1,100}$/;
const TRACKING = /^[A-Za-z]{2}[0-9]{9}[A-Za-z]{2}$/;

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** `map.set`, dropping the oldest entries past MAX_KEPT (bounded memory, like the Python demo). */
function keep(map, key, value) {
  map.delete(key);
  map.set(key, value);
  while (map.size > MAX_KEPT) map.delete(map.keys().next().value);
}

async function readJson(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw new HttpError(413, "the body is larger than 64 KiB");
    chunks.push(chunk);
  }
  try {
    const body = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}");
    if (body && typeof body === "object" && !Array.isArray(body)) return body;
  } catch {
    // answered below
  }
  throw new HttpError(400, "expected a JSON object");
}

export class ParcelBot {
  constructor({ reporter, speed = 1, log = console }) {
    this.reporter = reporter;
    this.speed = speed;
    this.log = log;
    this.answers = new Map(); // Idempotency-Key -> [status, body]
    this.running = new Map(); // request hash -> {key, controller, done}
    this.calls = new Map(); // request hash -> {key: count}
    this.runs = new Map(); // request hash -> executions started
  }

  count(hash, key) {
    const seen = this.calls.get(hash) ?? {};
    seen[key] = (seen[key] ?? 0) + 1;
    keep(this.calls, hash, seen);
  }

  async run(body, key) {
    const hash = body.requestHash;
    if (typeof hash !== "string" || !HASH.test(hash)) throw new HttpError(400, "expected {requestHash, data}");
    const data = body.data && typeof body.data === "object" && !Array.isArray(body.data) ? body.data : {};
    key ||= `${hash}:run`;
    this.count(hash, key);
    const answered = this.answers.get(key);
    if (answered) return answered; // a retried call joins the execution under way
    let answer;
    if (!TRACKING.test(String(data.tracking_number ?? ""))) {
      answer = [200, { status: "error", error: "The post office knows no such tracking number.", retryable: false }];
    } else {
      // A new key for a request still at work (an operator's retry): the old execution stops.
      this.running.get(hash)?.controller.abort();
      const controller = new AbortController();
      const work = new ParcelRun({ reporter: this.reporter, hash, data, speed: this.speed, signal: controller.signal, log: this.log });
      const entry = { key, controller, done: null };
      entry.done = work.run().finally(() => {
        if (this.running.get(hash) === entry) this.running.delete(hash);
      });
      this.running.set(hash, entry);
      keep(this.runs, hash, (this.runs.get(hash) ?? 0) + 1);
      answer = [202, { status: "accepted" }];
    }
    keep(this.answers, key, answer);
    return answer;
  }

  cancel(body) {
    const hash = String(body.requestHash ?? "");
    this.count(hash, "cancel");
    this.running.get(hash)?.controller.abort();
    return [200, { status: "cancelled" }];
  }

  async handle(req) {
    const url = new URL(req.url, "http://bot");
    if (req.method === "GET" && url.pathname === "/healthz") return [200, { status: "ok" }];
    if (req.method === "GET" && url.pathname === "/demo/calls") {
      const hash = url.searchParams.get("requestHash") ?? "";
      return [200, { calls: this.calls.get(hash) ?? {}, runs: this.runs.get(hash) ?? 0, running: this.running.has(hash) }];
    }
    const match = /^\/services\/([^/]+)\/(run|cancel|resend-otp)$/.exec(url.pathname);
    if (!match) return [404, { error: "not found" }];
    if (req.method !== "POST") return [405, { error: "POST only" }];
    const [, slug, action] = match;
    if (slug !== SLUG) return [404, { status: "error", error: `unknown service ${slug.slice(0, 64)}` }];
    const body = await readJson(req);
    if (action === "run") return this.run(body, String(req.headers["idempotency-key"] ?? "").slice(0, 200));
    if (action === "cancel") return this.cancel(body);
    return [200, { status: "error", error: "This service sends no code.", retryable: false }];
  }

  /** Stops every execution and waits for them to end. */
  async stop() {
    const pending = [...this.running.values()];
    for (const entry of pending) entry.controller.abort();
    await Promise.allSettled(pending.map((e) => e.done));
  }
}

export function createBotServer(bot) {
  return createServer((req, res) => {
    bot
      .handle(req)
      .catch((error) => {
        if (error instanceof HttpError) return [error.status, { status: "error", error: error.message }];
        bot.log.error(`parcel-tracking: ${error.stack ?? error}`);
        return [500, { status: "error", error: "internal error" }];
      })
      .then(([status, body]) => {
        res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
      });
  });
}

async function main() {
  const port = Number(process.env.NODE_BOT_PORT || 9998);
  const host = process.env.HOST || "127.0.0.1";
  const reporter = reporterFromEnv();
  const bot = new ParcelBot({ reporter, speed: Number(process.env.BOT_SPEED || 1) });
  const server = createBotServer(bot);
  server.listen(port, host, () => console.log(`longrun node demo bot (${SLUG}) on http://${host}:${port}`));
  const shutdown = async () => {
    server.close();
    await bot.stop();
    await reporter.close();
    process.exit(0);
  };
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
