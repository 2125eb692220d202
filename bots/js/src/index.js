// longrun-bot: how a Node.js bot tells Longrun what it is doing. The same four calls as the
// Python SDK (bots/sdk.py) over two transports: RedisReporter (the server's own Lua script,
// one round trip) and HttpReporter (Standard Webhooks-signed events, retried, idempotent).
export { INPUT_KINDS, ReportError, inputPrompt, otpPrompt } from "./events.js";
export { HttpReporter, newEventId } from "./http.js";
export { Keys } from "./keys.js";
export { RedisReporter, settingsFromEnv } from "./redis.js";
export { RedisUpdater } from "./redis-updater.js";
export { reporterFromEnv } from "./reporter.js";
export { enqueueCheckOtp } from "./rq.js";
export { loadScript, scriptSha } from "./scripts.js";
