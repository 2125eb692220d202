// Redis key and channel names, as server/record/keys.py names them (`prefix` is KEY_PREFIX).
import calculateSlot from "cluster-key-slot";
import { CONTRACT } from "./contract.js";

const SHARD_OF_SLOT = new Map(CONTRACT.shard_tags.map((tag, i) => [calculateSlot(tag), i]));

export class Keys {
  constructor(prefix = "") {
    this.prefix = prefix;
  }
  record(h) {
    return `${this.prefix}local_request:${h}`;
  }
  channel(h) {
    return `${this.prefix}local_request_updates:${h}`;
  }
  /** The request's sharded pub/sub channel (Redis Cluster). */
  shardChannel(h) {
    return `{${this.record(h)}}:updates`;
  }
  otp(h) {
    return `{${this.record(h)}}:otp`;
  }
  /** The request's log of recent changes (written by update.lua; pages resume from it). */
  log(h) {
    return `{${this.record(h)}}:log`;
  }
  /** The shard a record lives in; hashes minted elsewhere fall back to shard 0. */
  shard(h) {
    return SHARD_OF_SLOT.get(calculateSlot(this.record(h))) ?? 0;
  }
  #tagged(kind, shard) {
    return `${this.prefix}longrun:${kind}:{${CONTRACT.shard_tags[shard]}}`;
  }
  archive(shard) {
    return this.#tagged("archive", shard);
  }
  inflight(shard) {
    return this.#tagged("inflight", shard);
  }
  counts(shard) {
    return this.#tagged("counts", shard);
  }
  otpWaits(shard) {
    return this.#tagged("otpwait", shard);
  }
  /** KEYS of update.lua, in its order. */
  changeKeys(h) {
    const shard = this.shard(h);
    return [this.record(h), this.archive(shard), this.inflight(shard), this.otp(h), this.counts(shard), this.otpWaits(shard), this.log(h)];
  }
}
