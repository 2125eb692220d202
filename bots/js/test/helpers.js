// Test helpers: this run's Redis keys (KEY_PREFIX, set by tests/test_node_sdk.py or a
// fresh one), records made by the server's own create.lua, and cleaning up exactly ours.
import { randomBytes } from "node:crypto";
import Redis from "ioredis";
import { Keys, RedisReporter, loadScript } from "longrun-bot";

export const PREFIX = process.env.KEY_PREFIX || `tjs${randomBytes(4).toString("hex")}_`;
export const REDIS_URL = process.env.REDIS_URL || "redis://127.0.0.1:6379/0";
export const keys = new Keys(PREFIX);

export function client(url = REDIS_URL) {
  const redis = new Redis(url);
  redis.defineCommand("longrunCreate", { numberOfKeys: 4, lua: loadScript("create") });
  return redis;
}

// With a KEY_PREFIX from tests/test_node_sdk.py the prefix is shared with the Python side of
// that test (its web process, worker and demo bot run beside this suite): clean up only the
// requests made here, and leave the rest to that test's own clean-up.
const SHARED_PREFIX = Boolean(process.env.KEY_PREFIX);
const made = new Set();

export function newHash() {
  const h = "req_" + randomBytes(16).toString("base64url");
  made.add(h);
  return h;
}

/** A request as the server creates it (server/record/model.py new_record), then started. */
export async function newRunning(redis, slug = "vehicle-fines", { start = true } = {}) {
  const h = newHash();
  const record = {
    hash: h,
    service_slug: slug,
    status: "pending",
    step: "",
    progress: 0,
    current_message: "Waiting for a free worker…",
    estimated_duration: 20,
    estimated_remaining_time: 20,
    requires_otp: false,
    otp_data: null,
    request_data: {},
    result_data: null,
    error: null,
    user_id: "u",
    priority: "high",
    started_at: null,
    finished_at: null,
    _p: { token: "0".repeat(64) },
  };
  const shard = keys.shard(h);
  const reply = await redis.longrunCreate(
    keys.record(h), keys.counts(shard), keys.inflight(shard), keys.log(h), JSON.stringify(record), 600, keys.channel(h), h, "",
  );
  if (reply[0] !== "ok") throw new Error(`create: ${reply}`);
  if (start) await new RedisReporter(redis, { prefix: PREFIX }).update(h, { status: "processing" }, { expect: ["pending"] });
  return h;
}

export async function record(redis, h) {
  return JSON.parse(await redis.get(keys.record(h)));
}

/** Delete our keys (never a FLUSH: others share this Redis): every key carrying our prefix, or,
 * when the prefix is shared, those of the requests made here. `all`: a Redis of our own. */
export async function cleanUp(redis, { all = !SHARED_PREFIX } = {}) {
  let cursor = "0";
  do {
    const [next, found] = await redis.scan(cursor, "MATCH", `*${PREFIX}*`, "COUNT", 1000);
    cursor = next;
    const ours = all ? found : found.filter((key) => [...made].some((h) => key.includes(h)));
    if (ours.length) await redis.del(...ours);
  } while (cursor !== "0");
}
