// The Node SDK's side of bench/redis_costs.py's "update cost for a bot": `calls` sequential
// RedisReporter.progress() calls on one running request, timed one by one, then 500 more
// between two INFO commandstats readings, counting the commands the client sends.
//
// node bench/node_update_cost.mjs REDIS_URL KEY_PREFIX REQUEST_HASH CALLS  -> one JSON line
import { RedisReporter } from "../bots/js/src/index.js";

const [url, prefix, hash, callsText] = process.argv.slice(2);
const calls = Number(callsText);

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function commandCalls(info) {
  const out = {};
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out[match[1]] = Number(match[2]);
  return out;
}

const report = RedisReporter.connect({ redisUrl: url, prefix });
try {
  for (let i = 0; i < 200; i++) await report.progress(hash, 1 + (i % 50), { step: "fetch", message: "Fetching fines" });
  const times = [];
  for (let i = 0; i < calls; i++) {
    const started = process.hrtime.bigint();
    await report.progress(hash, 1 + Math.floor((i * 98) / calls), { step: "fetch", message: `Fetching fines (${i})` });
    times.push(Number(process.hrtime.bigint() - started) / 1e6);
  }

  // Every command the client sends goes through sendCommand (the script's EVALSHA, and the EVAL
  // that would follow a NOSCRIPT).
  const redis = report.redis;
  let sent = 0;
  const send = redis.sendCommand.bind(redis);
  redis.sendCommand = (command, stream) => {
    sent += 1;
    return send(command, stream);
  };
  const n = Math.min(calls, 500);
  const before = commandCalls(await redis.info("commandstats"));
  sent = 0;
  for (let i = 0; i < n; i++) await report.progress(hash, 99, { step: "fetch", message: `counted (${i})` });
  const sentPerCall = sent / n;
  const after = commandCalls(await redis.info("commandstats"));
  const delta = {};
  for (const [name, count] of Object.entries(after)) {
    const d = count - (before[name] ?? 0) - (name === "info" ? 1 : 0);
    if (d > 0) delta[name] = d;
  }
  console.log(
    JSON.stringify({
      calls,
      p50_ms: Math.round(percentile(times, 50) * 1000) / 1000,
      p99_ms: Math.round(percentile(times, 99) * 1000) / 1000,
      counted_calls: n,
      requests_written_per_call: sentPerCall,
      server_commands: delta,
      node: process.version,
    }),
  );
} finally {
  await report.close();
}
