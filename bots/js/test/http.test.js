// Signed events against a real Longrun web process (LONGRUN_URL, BOT_WEBHOOK_SECRET; set by
// tests/test_node_sdk.py, which also checks that nothing here was skipped).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { Webhook } from "standardwebhooks";
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

test("inputRequired sends one signed input_required event (checked before sending)", async () => {
  const secret = "whsec_" + randomBytes(32).toString("base64");
  const sent = [];
  const capture = async (url, init) => {
    sent.push({ url, init });
    return new Response(JSON.stringify({ applied: true }), { status: 202, headers: { "content-type": "application/json" } });
  };
  const report = new HttpReporter({ baseUrl: "http://longrun.test/", secret, fetch: capture });
  const choice = {
    id: "branch",
    kind: "choice",
    label: "Which branch?",
    options: [
      { value: "north", label: "North" },
      { value: "south", label: "South" },
    ],
  };
  assert.equal(await report.inputRequired("req_abc", choice, { eventId: "evt_input_1" }), true);
  assert.equal(sent.length, 1);
  const { url, init } = sent[0];
  assert.equal(url, "http://longrun.test/api/bot/requests/req_abc/events");
  assert.equal(init.headers["webhook-id"], "evt_input_1");
  // Verifiable with the same secret, by the reference implementation the server uses too.
  const event = new Webhook(secret).verify(init.body, init.headers);
  assert.deepEqual(event, {
    type: "input_required",
    input: { ...choice, secret: false, expires_in: 120 },
  });

  const captcha = { id: "cap", kind: "captcha", label: "Type the letters", image: "data:image/png;base64,iVBORw0KGgo=", length: 5 };
  await report.inputRequired("req_abc", captcha);
  const sentCaptcha = JSON.parse(sent[1].init.body);
  assert.equal(sentCaptcha.input.secret, true); // a captcha's answer travels like the code
  assert.equal(sentCaptcha.input.length, 5);
  const code = JSON.parse((await report.inputRequired("req_abc", { id: "c", kind: "code", label: "Code" }), sent[2].init.body));
  assert.deepEqual(code.input, { id: "c", kind: "code", label: "Code", secret: true, expires_in: 120, length: 6, destination_hint: "" });

  for (const [bad, why] of [
    [{ ...choice, kind: "dance" }, /input.kind must be one of/],
    [{ ...choice, options: [{ value: "x", label: "X" }] }, /2 to 20 choices/],
    [{ ...choice, id: "no spaces please" }, /input.id/],
    [{ ...captcha, image: "http://example.com/x.png" }, /data:image\/png/],
    [{ ...captcha, image: "data:image/png;base64," + "A".repeat(90_000) }, /larger than 64 KiB/], // 67,500 bytes once decoded
    [{ id: "t", kind: "text", label: "" }, /input.label is required/],
  ]) {
    await assert.rejects(report.inputRequired("req_abc", bad), why);
  }
  assert.equal(sent.length, 3); // nothing malformed left the process
});

test("over HTTP as over Redis, an expired or finished request is false, not an error", { skip }, async () => {
  const report = new HttpReporter({ baseUrl: URL, secret: SECRET });
  assert.equal(await report.progress("req_" + "n".repeat(25), 10), false); // expired (or never was)
  const h = await newRunning(redis);
  assert.equal(await report.completed(h, { total: 0 }), true);
  assert.equal(await report.completed(h, { total: 1 }), false); // finished: ignored
});
