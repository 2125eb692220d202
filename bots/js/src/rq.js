// Enqueuing the one RQ job a bot may need to start: `check_otp`, which relays a code the
// person typed before the bot asked for it (server/queue/dispatch.py, Dispatcher.check_otp).
// The job's fields are RQ's own, rendered by Python from RQ into contract.json; here only the
// id, times, queue, description and timeout are filled in, and the writes are the ones RQ's
// Queue.enqueue makes (SADD the queue to the queue set, HSET the job, RPUSH its id), in one
// MULTI: one round trip.
import { deflateSync } from "node:zlib";
import { CONTRACT } from "./contract.js";

const JOB = CONTRACT.check_otp_job;
const DATA = deflateSync(Buffer.from(JOB.data_base64, "base64"));

/** RQ's time format: ISO 8601 UTC with microseconds and a Z. */
function rqTime(date = new Date()) {
  return date.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/**
 * Queue the check of an early code for request `hash` (its record's `seq` names the job, so a
 * second ask never queues the same check twice under two names).
 * @param {import("ioredis").Redis} redis
 * @param {{prefix: string, rqPrefix: string, timeScale: number}} options
 * @returns {Promise<string>} the job id
 */
export async function enqueueCheckOtp(redis, hash, seq, slug, { prefix = "", rqPrefix = "rq", timeScale = 1 } = {}) {
  const id = `${prefix}${hash}-otp${seq}`;
  const origin = `${prefix}${JOB.queue}`;
  const queueKey = `${rqPrefix}:queue:${origin}`;
  const deadline = (CONTRACT.bot_timeouts[slug] ?? 180) * timeScale;
  const now = rqTime();
  const fields = {
    ...JOB.fields,
    created_at: now,
    data: DATA,
    origin,
    description: `otp${seq} ${hash.slice(0, 12)}`,
    enqueued_at: now,
    // Service.limits: RQ's timeout sits 30 s above the request's deadline.
    timeout: Math.trunc(deadline) + 30,
  };
  await redis
    .multi()
    .sadd(`${rqPrefix}:queues`, queueKey)
    .hset(`${rqPrefix}:job:${id}`, fields)
    .rpush(queueKey, id)
    .exec();
  return id;
}
