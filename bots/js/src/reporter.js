// Choosing a transport from the environment, as the Python SDK's reporter_for does.
import { HttpReporter } from "./http.js";
import { RedisReporter, settingsFromEnv } from "./redis.js";

/** BOT_REPORT_MODE=http: signed events to PUBLIC_URL; otherwise straight into REDIS_URL. */
export function reporterFromEnv(env = process.env) {
  return env.BOT_REPORT_MODE === "http" ? HttpReporter.fromEnv(env) : RedisReporter.connect(settingsFromEnv(env));
}
