// The parcel-tracking scenario: what the Node demo bot does for one request, reporting through
// the Node SDK as it goes (the Python demo bots' bots/demo/scenarios.py, in JavaScript).
import { createHash } from "node:crypto";

export class Cancelled extends Error {}

const PLACES = ["Tehran sorting centre", "Qom hub", "Isfahan hub", "Shiraz hub", "Tabriz hub", "Mashhad hub"];
const EVENTS = ["Accepted at the counter", "Left the sorting centre", "Arrived at the hub", "Out for delivery"];
const DAY = 24 * 3600 * 1000;

/** A number in [lo, hi] that depends only on `text`: the same parcel always has the same journey. */
export function seeded(text, lo, hi) {
  const n = createHash("sha256").update(text).digest().readUInt32BE(0);
  return lo + (n % (hi - lo + 1));
}

/** What the post office knows about a parcel. */
export function journey(trackingNumber, now = Date.now()) {
  const stops = seeded(trackingNumber, 2, 4);
  const delivered = seeded(trackingNumber + "d", 0, 2) === 0;
  const rows = [];
  for (let i = 0; i < stops; i++) {
    const place = PLACES[seeded(trackingNumber + i, 0, PLACES.length - 1)];
    const date = new Date(now - (stops - i) * DAY).toISOString().slice(0, 10);
    rows.push({ date, place, event: EVENTS[Math.min(i, EVENTS.length - 2)] });
  }
  if (delivered) rows.push({ date: new Date(now).toISOString().slice(0, 10), place: rows.at(-1).place, event: "Delivered" });
  const result = { tracking_number: trackingNumber, delivered, last_seen: rows.at(-1).place, journey: rows };
  if (!delivered) result.estimated_delivery = new Date(now + seeded(trackingNumber + "e", 1, 3) * DAY).toISOString().slice(0, 10);
  return result;
}

/**
 * One execution: steps that take their time (divided by `speed`), a progress report about
 * once a second of it, then the outcome. Stops quietly when `signal` aborts (the request was
 * cancelled) or when Longrun ignores a report (it has finished or expired).
 */
export class ParcelRun {
  constructor({ reporter, hash, data, speed = 1, signal, log = console }) {
    this.reporter = reporter;
    this.hash = hash;
    this.trackingNumber = String(data.tracking_number ?? "").toUpperCase();
    this.speed = Math.max(0.001, speed);
    this.signal = signal;
    this.log = log;
  }

  async pause(seconds) {
    if (this.signal.aborted) throw new Cancelled();
    await new Promise((resolve) => {
      const timer = setTimeout(done, (seconds / this.speed) * 1000);
      const that = this.signal;
      function done() {
        clearTimeout(timer);
        that.removeEventListener("abort", done);
        resolve();
      }
      that.addEventListener("abort", done, { once: true });
    });
    if (this.signal.aborted) throw new Cancelled();
  }

  async tell(progress, step, message) {
    let applied;
    try {
      applied = await this.reporter.progress(this.hash, progress, { step, message });
    } catch (error) {
      // Progress is best-effort: the outcome is what must arrive.
      this.log.warn(`parcel-tracking: a report for ${this.hash.slice(0, 12)} failed: ${error.message}`);
      return;
    }
    if (!applied) {
      // Longrun ignored it: the request was cancelled, has finished or expired.
      this.log.info(`parcel-tracking: ${this.hash.slice(0, 12)} is over for Longrun; stopping`);
      throw new Cancelled();
    }
  }

  async step(name, start, end, seconds, message) {
    const ticks = Math.max(1, Math.min(20, Math.round(seconds / this.speed)));
    await this.tell(start, name, message);
    for (let i = 1; i <= ticks; i++) {
      await this.pause(seconds / ticks);
      await this.tell(start + Math.floor(((end - start) * i) / ticks), name, message);
    }
  }

  async run() {
    try {
      await this.step("connect", 2, 15, 4, "Connecting to the post office");
      await this.step("history", 15, 70, 10, `Reading the journey of ${this.trackingNumber}`);
      await this.step("locate", 70, 95, 8, "Finding where it is now");
      await this.final(() => this.reporter.completed(this.hash, journey(this.trackingNumber)));
    } catch (error) {
      if (error instanceof Cancelled) return;
      this.log.error(`parcel-tracking: ${this.hash.slice(0, 12)} failed: ${error.message}`);
      await this.final(() => this.reporter.failed(this.hash, "The post office could not be reached."));
    }
  }

  // The outcome of a 202 job must arrive: tried again, backing off up to 4 s, for a minute
  // (a Redis restart outlasts a few quick tries), as the Python demo bots do.
  async final(report) {
    const giveUpAt = Date.now() + 60_000;
    for (let delay = 500; ; delay = Math.min(4000, delay * 2)) {
      try {
        await report();
        return;
      } catch (error) {
        if (Date.now() + delay > giveUpAt) {
          this.log.error(`parcel-tracking: the outcome of ${this.hash.slice(0, 12)} was lost: ${error.message}`);
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, delay * (0.5 + Math.random() / 2)));
      }
    }
  }
}
