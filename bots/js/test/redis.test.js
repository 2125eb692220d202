import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, test } from "node:test";
import { RedisReporter } from "longrun-bot";
import { PREFIX, cleanUp, client, keys, newRunning, record } from "./helpers.js";

const skipWorker = process.env.CHECK_BOT_PORT ? false : "needs CHECK_BOT_PORT and a worker (tests/test_node_sdk.py)";
const skipPrivate = process.env.PRIVATE_REDIS_URL ? false : "needs PRIVATE_REDIS_URL (tests/test_node_sdk.py)";

let redis;
let report;
before(() => {
  redis = client();
  report = new RedisReporter(redis, { prefix: PREFIX });
});
after(async () => {
  await cleanUp(redis);
  await redis.quit();
});

test("each call is one script run that the record shows", async () => {
  const h = await newRunning(redis);
  assert.equal(await report.progress(h, 30, { step: "search", message: "Finding the vehicle" }), true);
  let rec = await record(redis, h);
  assert.equal(rec.progress, 30);
  assert.equal(rec.current_message, "Finding the vehicle");
  assert.equal(rec.message_key, null);
  assert.equal(rec.step, "search");
  assert.equal(await report.progress(h, 10), true); // applied, but the bar never goes back
  rec = await record(redis, h);
  assert.equal(rec.progress, 30);
  assert.equal(rec.step, "search");
  assert.equal(await report.completed(h, { total: 0, fines: [] }), true);
  assert.equal(await report.progress(h, 99), false); // finished: ignored, and the bot learns it
  rec = await record(redis, h);
  assert.equal(rec.status, "completed");
  assert.equal(rec.progress, 100);
  assert.deepEqual(rec.result_data, { total: 0, fines: [] });
  assert.equal(rec.message_key, "done");
  assert.equal(rec.current_message, "Done.");
  assert.ok(Number(rec.seq) >= 4);
});

test("one update publishes the new record on the request's channel", async () => {
  const h = await newRunning(redis);
  const sub = redis.duplicate();
  await sub.subscribe(keys.channel(h));
  const got = new Promise((resolve) => sub.on("message", (_channel, text) => resolve(JSON.parse(text))));
  await report.progress(h, 55, { step: "search" });
  const published = await got;
  await sub.quit();
  assert.equal(published.progress, 55);
  assert.equal(published._p, undefined); // the private part never leaves Redis
});

test("otpRequired waits for the code with the server's prompt and message", async () => {
  const h = await newRunning(redis, "credit-score-rating");
  await report.progress(h, 40, { step: "captcha" });
  const asked = await report.otpRequired(h, { length: 5, destination_hint: "+98 912 *** **34", expires_in: 90 });
  assert.equal(asked, true);
  const rec = await record(redis, h);
  assert.equal(rec.status, "waiting_otp");
  assert.equal(rec.requires_otp, true);
  assert.equal(rec.step, "otp"); // the catalog gives credit-score-rating an otp step
  assert.equal(rec.otp_data.length, 5);
  assert.equal(rec.otp_data.destination_hint, "+98 912 *** **34");
  assert.equal(rec.otp_data.attempts_left, 3);
  assert.ok(rec.otp_data.expires_at && rec.otp_data.resend_available_at);
  assert.equal(rec.message_key, "otp");
  assert.deepEqual(rec.message_params, { destination: "+98 912 *** **34" });
  assert.equal(rec.current_message, "Enter the code we sent to +98 912 *** **34.");
  assert.equal(await report.progress(h, 80, { step: "report" }), true);
  assert.equal((await record(redis, h)).status, "waiting_otp"); // progress alone does not leave the wait
});

test("a wrong code is said with its own message; a service without an otp step keeps its step", async () => {
  const h = await newRunning(redis);
  await report.progress(h, 20, { step: "search" });
  await report.otpRequired(h, { error: "wrong code", attempts_left: 1 });
  const rec = await record(redis, h);
  assert.equal(rec.step, "search");
  assert.equal(rec.message_key, "otp_wrong");
  assert.equal(rec.otp_data.error, "wrong code");
  assert.equal(rec.otp_data.attempts_left, 1);
  assert.equal(rec.otp_data.length, 6);
});

test("a code typed early goes to the bot's hook, and is read once", async () => {
  const ready = [];
  const hooked = new RedisReporter(redis, { prefix: PREFIX, onOtpReady: async (h, seq) => ready.push([h, seq]) });
  const h = await newRunning(redis, "credit-score-rating");
  await redis.set(keys.otp(h), "482913", "EX", 60);
  assert.equal(await hooked.otpRequired(h, {}), true);
  const rec = await record(redis, h);
  assert.equal(rec.status, "processing");
  assert.equal(rec.message_key, "checking");
  assert.deepEqual(ready, [[h, rec.seq]]);
  assert.equal(await hooked.takeOtp(h), "482913");
  assert.equal(await hooked.takeOtp(h), null);
});

test("failed keeps 500 characters of the error; unknown and finished requests are not applied", async () => {
  const h = await newRunning(redis);
  assert.equal(await report.failed(h, "x".repeat(700)), true);
  const rec = await record(redis, h);
  assert.equal(rec.status, "failed");
  assert.equal(rec.error.length, 500);
  assert.equal(rec.message_key, "failed");
  assert.equal(await report.completed(h, {}), false);
  assert.equal(await report.progress("req_nobody_has_this_one_at_all", 5), false);
});

test("bad events are refused before any I/O", async () => {
  await assert.rejects(report.otpRequired("req_x", { length: 3 }), /otp.length must be between 4 and 10/);
  await assert.rejects(report.completed("req_x", [1]), /result must be a JSON object/);
  await assert.rejects(report.progress("req_x", "lots"), /progress must be a number/);
});

test("a code typed early is handed to a worker, as the Python SDK does", { skip: skipWorker }, async () => {
  // tests/test_node_sdk.py runs a real RQ worker on this prefix's queues and routes
  // credit-score-rating's bot API to CHECK_BOT_PORT: this test is that bot.
  const heard = [];
  const bot = createServer(async (req, res) => {
    let body = "";
    for await (const chunk of req) body += chunk;
    heard.push({ url: req.url, key: req.headers["idempotency-key"], body: JSON.parse(body) });
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ status: "success", result: { score: 731 } }));
  });
  await new Promise((resolve) => bot.listen(Number(process.env.CHECK_BOT_PORT), "127.0.0.1", resolve));
  try {
    const h = await newRunning(redis, "credit-score-rating");
    await redis.set(keys.otp(h), "482913", "EX", 60);
    assert.equal(await report.otpRequired(h, { destination_hint: "+98 912 *** **34" }), true);
    const asked = await record(redis, h);
    assert.equal(asked.status, "processing");
    assert.equal(asked.message_key, "checking");
    // The worker may already have run it: a phase's job is deleted the moment it succeeds
    // (result_ttl 0), and then the outcome below is what shows the hand-off.
    const job = await redis.hgetall(`rq:job:${PREFIX}${h}-otp${asked.seq}`);
    if (Object.keys(job).length > 0) {
      assert.equal(job.origin, `${PREFIX}high`);
      assert.equal(job.failure_callback_name, "jobs.tasks.on_job_failure");
    }
    let rec = asked;
    for (let i = 0; i < 400 && rec.status !== "completed"; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      rec = await record(redis, h);
    }
    assert.equal(rec.status, "completed", JSON.stringify(rec));
    assert.deepEqual(rec.result_data, { score: 731 });
    assert.equal(heard.length, 1);
    assert.equal(heard[0].url, "/services/credit-score-rating/run");
    assert.equal(heard[0].body.otp, "482913"); // the code reached the bot, once
    assert.equal(heard[0].body.requestHash, h);
    assert.equal(await redis.get(keys.otp(h)), null); // and left Redis
  } finally {
    bot.close();
  }
});

test("a Redis that lost its scripts (NOSCRIPT) gets them again within the same call", { skip: skipPrivate }, async () => {
  // A redis-server of this test's own (tests/test_node_sdk.py starts it): SCRIPT FLUSH is ours to do.
  const own = client(process.env.PRIVATE_REDIS_URL);
  const ownReport = new RedisReporter(own, { prefix: PREFIX });
  const stats = async () => {
    const info = await own.info("commandstats");
    const get = (cmd, field) => Number(new RegExp(`cmdstat_${cmd}:.*?${field}=(\\d+)`).exec(info)?.[1] ?? 0);
    return { evalsha: get("evalsha", "calls"), evalshaFailed: get("evalsha", "failed_calls"), eval: get("eval", "calls") };
  };
  try {
    const h = await newRunning(own);
    assert.equal(await ownReport.progress(h, 10), true);
    let before = await stats();
    assert.equal(await ownReport.progress(h, 20), true); // the script is there: one EVALSHA
    let after = await stats();
    assert.deepEqual([after.evalsha - before.evalsha, after.eval - before.eval], [1, 0]);

    await own.script("FLUSH"); // as a restart or failover to a fresh replica would
    before = await stats();
    assert.equal(await ownReport.progress(h, 30, { step: "search" }), true);
    after = await stats();
    assert.equal(after.evalshaFailed - before.evalshaFailed, 1); // NOSCRIPT
    assert.equal(after.eval - before.eval, 1); // the fallback sent the script, and it ran once
    const rec = JSON.parse(await own.get(keys.record(h)));
    assert.equal(rec.progress, 30);
    assert.equal(rec.step, "search");
    before = after;
    assert.equal(await ownReport.progress(h, 40), true); // loaded again: back to one EVALSHA
    after = await stats();
    assert.deepEqual([after.evalsha - before.evalsha, after.eval - before.eval], [1, 0]);
  } finally {
    await cleanUp(own, { all: true });
    await own.quit();
  }
});

const CHOICE = {
  id: "vehicle",
  kind: "choice",
  label: "Which vehicle?",
  options: [
    { value: "car", label: "Car 12B345-67" },
    { value: "bike", label: "Motorbike 98765" },
  ],
  expires_in: 300,
};

test("inputRequired asks as the server's Lifecycle.ask_input does: the prompt, its message, the wait", async () => {
  const h = await newRunning(redis);
  assert.equal(await report.inputRequired(h, CHOICE), true);
  let rec = await record(redis, h);
  assert.equal(rec.status, "waiting_input");
  assert.equal(rec.requires_input, true);
  const { expires_at: expiresAt, attempts_left: attemptsLeft, ...prompt } = rec.input_request;
  assert.deepEqual(prompt, { ...CHOICE, secret: false });
  assert.equal(attemptsLeft, 3); // the script counts answers per prompt id (OTP_MAX_ATTEMPTS)
  assert.ok(Date.parse(expiresAt) - Date.now() > 250_000);
  assert.equal(rec.message_key, "input_choice");
  assert.equal(rec.current_message, "Choose one to go on.");
  assert.equal(rec._p.input_id, "vehicle");
  // Asked again with the bot's reason: the message says the answer was not accepted.
  assert.equal(await report.inputRequired(h, { id: "ok", kind: "confirm", label: "Go on?", error: "no such vehicle" }), true);
  rec = await record(redis, h);
  const { expires_at: _at, ...again } = rec.input_request;
  assert.deepEqual(again, { id: "ok", kind: "confirm", label: "Go on?", secret: false, expires_in: 120, error: "no such vehicle", attempts_left: 3 });
  assert.equal(rec.message_key, "input_wrong");
  assert.equal(await report.completed(h, { ok: true }), true);
  assert.equal(await report.inputRequired(h, CHOICE), false); // finished: not applied
});

test("a code asked with inputRequired is the OTP prompt under the bot's id", async () => {
  const h = await newRunning(redis, "credit-score-rating");
  const asked = { id: "sms", kind: "code", label: "Code", length: 5, destination_hint: "+98 912 *** **34", expires_in: 90 };
  assert.equal(await report.inputRequired(h, asked), true);
  const rec = await record(redis, h);
  assert.equal(rec.status, "waiting_otp");
  assert.equal(rec.step, "otp");
  assert.deepEqual(rec.otp_data.length, 5);
  assert.deepEqual(rec.input_request, {
    id: "sms", kind: "code", label: "", secret: true, expires_in: 90, length: 5, destination_hint: "+98 912 *** **34",
  });
  assert.equal(rec._p.code_prompt, "sms"); // the answer goes to the bot as input {id: "sms"}
  // otpRequired writes the same prompt under the id "code" (the answer then comes as `otp`).
  const other = await newRunning(redis, "credit-score-rating");
  await report.otpRequired(other, { length: 5, destination_hint: "+98 912 *** **34", expires_in: 90 });
  assert.deepEqual((await record(redis, other)).input_request, { ...rec.input_request, id: "code" });
});

test("malformed prompts are refused before any I/O, as the server would refuse them", async (t) => {
  // every command this client sends, counted here (the server's commandstats are shared with other tests)
  const sent = [];
  const send = redis.sendCommand;
  redis.sendCommand = function (command, ...rest) {
    sent.push(command.name);
    return send.call(this, command, ...rest);
  };
  t.after(() => {
    redis.sendCommand = send;
  });
  for (const [bad, why] of [
    [{ ...CHOICE, options: [CHOICE.options[0], CHOICE.options[0]] }, /distinct values/],
    [{ id: "cap", kind: "captcha", label: "Letters", image: "data:image/png;base64,R0lGODlhAQABAAAAACw=" }, /not a PNG/],
    [{ id: "cap", kind: "captcha", label: "Letters", image: "data:image/png;base64,!!!!" }, /not valid base64/],
    [{ id: "t", kind: "text", label: "Plate", pattern: "([" }, /not a valid regular expression/],
    [{ id: "t", kind: "text", label: "Plate", pattern: "(?=[0-9])[0-9a-z]{3}" }, /RE2/],
    [{ id: "t", kind: "text", label: "Plate", pattern: "(a)\\1" }, /RE2/],
    [{ id: "t", kind: "text", label: "Plate", pattern: "[^]{1,20}" }, /RE2/],
    [{ id: "t", kind: "text", label: "Plate", pattern: "x{1001}" }, /RE2/],
    [{ id: "t", kind: "text", label: "Plate", max_length: 501 }, /input.max_length/],
    [{ ...CHOICE, attempts_left: -1 }, /input.attempts_left/],
  ]) {
    await assert.rejects(report.inputRequired("req_x", bad), why);
  }
  assert.deepEqual(sent, []);
});

test("the person's answer to a Node bot's question comes back to its /run through the server", { skip: skipWorker }, async () => {
  // tests/test_node_sdk.py routes credit-score-rating's bot API to CHECK_BOT_PORT: this test is
  // that bot. It answers 202, asks over Redis which vehicle, and finishes with the answer.
  const heard = [];
  const bot = createServer(async (req, res) => {
    let body = "";
    for await (const chunk of req) body += chunk;
    const call = JSON.parse(body);
    heard.push(call);
    if (call.input) {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ status: "success", result: { vehicle: call.input.value } }));
      return;
    }
    res.writeHead(202, { "content-type": "application/json" }).end(JSON.stringify({ status: "accepted" }));
    await report.progress(call.requestHash, 30, { step: "login" });
    await report.inputRequired(call.requestHash, CHOICE);
  });
  await new Promise((resolve) => bot.listen(Number(process.env.CHECK_BOT_PORT), "127.0.0.1", resolve));
  try {
    const base = process.env.LONGRUN_URL;
    const created = await fetch(`${base}/api/requests`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ service: "credit-score-rating", data: { national_id: "0012345678", mobile: "09120000009" } }),
    });
    assert.equal(created.status, 201, await created.clone().text());
    const { hash: h, access_token: token } = await created.json();
    const auth = { authorization: `Bearer ${token}` };
    const poll = async (until) => {
      for (let i = 0; i < 400; i++) {
        const rec = await (await fetch(`${base}/api/requests/${h}`, { headers: auth })).json();
        if (until(rec)) return rec;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      throw new Error(`request ${h} never got there`);
    };
    const waiting = await poll((rec) => rec.status === "waiting_input");
    assert.deepEqual(waiting.input_request.options.map((o) => o.value), ["car", "bike"]);
    const answered = await fetch(`${base}/api/requests/${h}/input`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ id: "vehicle", value: "bike" }),
    });
    assert.equal(answered.status, 202, await answered.clone().text());
    const done = await poll((rec) => ["completed", "failed"].includes(rec.status));
    assert.equal(done.status, "completed", JSON.stringify(done));
    assert.deepEqual(done.result_data, { vehicle: "bike" });
    assert.equal(heard.length, 2);
    assert.equal(heard[0].requestHash, h);
    assert.deepEqual(heard[1].input, { id: "vehicle", value: "bike" }); // relayed once, as given
  } finally {
    bot.close();
  }
});
test("a Redis that stops answering makes a report fail in seconds, never hang", async () => {
  // accepts the connection, then answers nothing (a path that drops traffic silently)
  const silent = (await import("node:net")).createServer(() => {});
  await new Promise((resolve) => silent.listen(0, "127.0.0.1", resolve));
  const reporter = RedisReporter.connect({ redisUrl: `redis://127.0.0.1:${silent.address().port}`, prefix: PREFIX });
  try {
    await assert.rejects(reporter.progress("req_silent", 10));
  } finally {
    reporter.redis.disconnect();
    silent.close();
  }
});

test("a result is kept as the server keeps it, and a prompt after the last attempt is not waited for", async () => {
  const h = await newRunning(redis);
  assert.equal(await report.completed(h, { bill_id: 123456789012345, fines: [{ amount: 1.5 }] }), true);
  const rec = await record(redis, h);
  assert.deepEqual(rec.result_data, { bill_id: "123456789012345", fines: [{ amount: 1.5 }] }); // not ...340
  await assert.rejects(report.completed(await newRunning(redis), { big: "x".repeat(300_000) }), /larger than/);
  const asked = await newRunning(redis);
  const stored = JSON.parse(await redis.get(keys.record(asked)));
  stored._p.otp_tries = 3; // every attempt used
  await redis.set(keys.record(asked), JSON.stringify(stored), "EX", 600);
  assert.equal(await report.otpRequired(asked, { length: 6, expires_in: 120, error: "Wrong code" }), false);
  assert.equal((await record(redis, asked)).status, "failed");
});
