// Signed events against a real Longrun web process (LONGRUN_URL, BOT_WEBHOOK_SECRET; set by
// tests/test_node_sdk.py, which also checks that nothing here was skipped).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { HttpReporter, RedisReporter, RedisUpdater, ReportError } from "longrun-bot";
import { PREFIX, REDIS_URL, cleanUp, client, newRunning, record } from "./helpers.js";

const URL = process.env.LONGRUN_URL;
const SECRET = (process.env.BOT_WEBHOOK_SECRET || "").split(/\s+/).filter(Boolean)[0];
const skip = URL && SECRET ? false : "needs LONGRUN_URL and BOT_WEBHOOK_SECRET (tests/test_node_sdk.py sets them)";

let redis;
before(() => {
  redis = client();
});
after(async () => {
  await cleanUp(redis);
  await redis.quit();
});

test("the four calls over signed events", { skip }, async () => {
  const report = new HttpReporter({ baseUrl: URL, secret: SECRET });
  const h = await newRunning(redis, "credit-score-rating");
  assert.equal(await report.progress(h, 35, { step: "captcha", message: "Solving the captcha" }), true);
  let rec = await record(redis, h);
  assert.equal(rec.progress, 35);
  assert.equal(rec.current_message, "Solving the captcha");
  assert.equal(await report.otpRequired(h, { length: 6, destination_hint: "+98 912 *** **34" }), true);
  rec = await record(redis, h);
  assert.equal(rec.status, "waiting_otp");
  assert.equal(rec.step, "otp");
  assert.equal(await report.completed(h, { score: 712 }), true);
  assert.equal(await report.failed(h, "too late"), false); // finished: ignored
  rec = await record(redis, h);
  assert.equal(rec.status, "completed");
  assert.deepEqual(rec.result_data, { score: 712 });
});

test("a retry after a lost answer is not applied twice", { skip }, async () => {
  let calls = 0;
  // The first request reaches the server; its answer is lost on the way back.
  const lossy = async (url, init) => {
    calls += 1;
    const resp = await fetch(url, init);
    if (calls === 1) throw new TypeError("socket hang up");
    return resp;
  };
  const report = new HttpReporter({ baseUrl: URL, secret: SECRET, fetch: lossy, backoff: 10 });
  const h = await newRunning(redis);
  const before = (await record(redis, h)).seq;
  assert.equal(await report.progress(h, 50, { step: "search" }), true);
  assert.equal(calls, 2);
  assert.equal((await record(redis, h)).seq, before + 1);
});

test("a reused event id is refused as a replay; a wrong secret is refused, not retried", { skip }, async () => {
  const h = await newRunning(redis);
  const report = new HttpReporter({ baseUrl: URL, secret: SECRET });
  assert.equal(await report.progress(h, 10, { eventId: "evt_node_once" + h }), true);
  await assert.rejects(report.progress(h, 20, { eventId: "evt_node_once" + h }), (e) => {
    assert.ok(e instanceof ReportError);
    assert.equal(e.status, 409);
    assert.equal(e.code, "replayed_event");
    return true;
  });
  let calls = 0;
  const counting = async (url, init) => {
    calls += 1;
    return fetch(url, init);
  };
  const wrong = new HttpReporter({ baseUrl: URL, secret: "whsec_" + Buffer.from("x".repeat(32)).toString("base64"), fetch: counting });
  await assert.rejects(wrong.progress(h, 30), (e) => e.status === 401);
  assert.equal(calls, 1);
  assert.equal((await record(redis, h)).progress, 10);
});

test("an unreachable server is retried, then reported", { skip }, async () => {
  const report = new HttpReporter({ baseUrl: "http://127.0.0.1:9", secret: SECRET, retries: 2, backoff: 5 });
  await assert.rejects(report.progress("req_x", 1), /could not reach Longrun/);
});

test("a bot written for the original RedisUpdater changes one import", { skip }, async () => {
  for (const mode of ["redis", "http"]) {
    const reporter =
      mode === "http"
        ? new HttpReporter({ baseUrl: URL, secret: SECRET })
        : RedisReporter.connect({ redisUrl: REDIS_URL, prefix: PREFIX });
    const updater = new RedisUpdater(reporter);
    const h = await newRunning(redis, "credit-score-rating");
    assert.equal(await updater.updateProgress(h, 40, "captcha", "Solving the captcha"), true);
    assert.equal(await updater.markAsOtpRequired(h, { length: 6, destination_hint: "+98 912 *** **34", hash: "x" }), true);
    assert.equal((await record(redis, h)).status, "waiting_otp");
    assert.equal(await updater.markAsCompleted(h, { score: 700 }), true);
    assert.equal(await updater.markAsFailed(h, "late", { code: 1 }), false); // never throws
    const rec = await record(redis, h);
    assert.equal(rec.status, "completed");
    if (mode === "redis") assert.equal((await updater.getRequestStatus(h)).status, "completed");
    await updater.close();
  }
});
