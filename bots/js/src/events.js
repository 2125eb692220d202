// Bot events as server/domain/protocol.py defines them: built and checked the same way for
// both transports (an event the server would refuse is refused here, before any I/O).

export class ReportError extends Error {
  /**
   * @param {string} message
   * @param {number} [status] the HTTP status, when the server refused the event
   * @param {string} [code] the server's error code (e.g. `replayed_event`, `state_conflict`)
   */
  constructor(message, status, code) {
    super(message);
    this.name = "ReportError";
    this.status = status;
    this.code = code;
  }
}

const MAX_TEXT = 500;

function int(value, what, lo, hi) {
  if (typeof value !== "number" || Number.isNaN(value)) throw new ReportError(`${what} must be a number`);
  if (value < lo || value > hi) throw new ReportError(`${what} must be between ${lo} and ${hi}`);
  return Math.trunc(value);
}

function text(value, what, limit) {
  if (value === undefined || value === null) return null;
  if (typeof value !== "string") throw new ReportError(`${what} must be a string`);
  // Python counts code points, not UTF-16 units.
  if ([...value].length > limit) throw new ReportError(`${what} is longer than ${limit} characters`);
  return value;
}

/** The OTP prompt, defaults filled in (OtpPrompt.parse + serialize). Never the code itself. */
export function otpPrompt(value = {}) {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ReportError("otp must be a JSON object");
  }
  const out = {
    length: int(value.length ?? 6, "otp.length", 4, 10) || 6,
    destination_hint: text(value.destination_hint ?? "", "otp.destination_hint", 64) ?? "",
    expires_in: int(value.expires_in ?? 120, "otp.expires_in", 10, 3600) || 120,
  };
  if (value.attempts_left !== undefined && value.attempts_left !== null) {
    out.attempts_left = int(value.attempts_left, "otp.attempts_left", 0, 100);
  }
  const error = text(value.error, "otp.error", 200);
  if (error) out.error = error;
  return out;
}

/** `{type: "progress", progress, step?, message?}`; progress is clamped to 0-100 like the Python SDK. */
export function progressEvent(progress, { step, message } = {}) {
  const n = Number(progress);
  if (Number.isNaN(n)) throw new ReportError("progress must be a number");
  const event = { type: "progress", progress: Math.max(0, Math.min(100, Math.trunc(n))) };
  if (step !== undefined && step !== null) event.step = text(step, "step", 64);
  if (message !== undefined && message !== null) event.message = text(message, "message", MAX_TEXT);
  return event;
}

export function otpRequiredEvent(otp) {
  return { type: "otp_required", otp: otpPrompt(otp) };
}

// protocol.py's _exact and _result: an integer past 10^14 is kept as its digits (the record's
// Lua JSON keeps 14 significant digits: 123456789012345 came back as 123456789012340), nesting
// and size bounded as the server bounds them.
const EXACT_INTEGERS = 1e14;
const MAX_DEPTH = 32;
const MAX_RESULT_BYTES = 256 * 1024;

function exact(value, depth = 0) {
  if (depth > MAX_DEPTH) throw new ReportError(`result is nested deeper than ${MAX_DEPTH} levels`);
  if (typeof value === "number" && Number.isInteger(value) && Math.abs(value) >= EXACT_INTEGERS) {
    return BigInt(value).toString();
  }
  if (Array.isArray(value)) return value.map((v) => exact(v, depth + 1));
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, exact(v, depth + 1)]));
  }
  return value;
}

/**
 * False for a prompt the request does not wait for after all (the Python SDK's _still_asking):
 * asked again after the person's last attempt, it fails the request instead. (A code typed
 * early moves it on to processing at once: that one is asked, and answered.)
 * @param {string} type the event's type @param {string | undefined} status the record's after it
 */
export function stillAsking(type, status) {
  return !((type === "otp_required" || type === "input_required") && status === "failed");
}

export function completedEvent(result) {
  if (typeof result !== "object" || result === null || Array.isArray(result)) {
    throw new ReportError("result must be a JSON object");
  }
  const kept = exact(result);
  if (Buffer.byteLength(JSON.stringify(kept)) > MAX_RESULT_BYTES) {
    throw new ReportError(`result is larger than ${MAX_RESULT_BYTES} bytes`);
  }
  return { type: "completed", result: kept };
}

export function failedEvent(error) {
  if (typeof error !== "string") throw new ReportError("error must be a string");
  // The record keeps 500 characters of it (Lifecycle.fail); the server refuses longer events.
  return { type: "failed", error: [...error].slice(0, MAX_TEXT).join("") };
}

// Any input from the person (DESIGN.md, "Additions"): checked and filled in exactly as
// server/domain/prompts.py's Prompt.parse + serialize do (the Redis reporter writes the result
// straight into the record, where no server checks it again), with one addition: a label is
// required here (the person should be told what is asked).
export const INPUT_KINDS = ["captcha", "choice", "confirm", "text", "code"];
const INPUT_ID = /^[A-Za-z0-9_.:-]{1,64}$/;
const SECRET_KINDS = new Set(["captcha", "code"]);
const MAX_IMAGE = 64 * 1024;
const DATA_URL = "data:image/png;base64,";
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const MAX_OPTIONS = 20;
const MAX_ANSWER = 500;

function object(value, what) {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new ReportError(`${what} must be a JSON object`);
  return value;
}

function required(value, what, limit) {
  const out = text(value, what, limit);
  if (!out) throw new ReportError(`${what} is required`);
  return out;
}

function optionalInt(value, what, lo, hi) {
  return value === undefined || value === null ? undefined : int(value, what, lo, hi);
}

/** The PNG of a captcha's data URL, checked as the server checks it (png_of). */
function checkedPng(image) {
  if (typeof image !== "string" || !image.startsWith(DATA_URL)) {
    throw new ReportError("input.image must be a data:image/png;base64,… URL");
  }
  const encoded = image.slice(DATA_URL.length);
  if (encoded.length > Math.floor((MAX_IMAGE + 2) / 3) * 4) throw new ReportError("input.image is larger than 64 KiB");
  if (!BASE64.test(encoded)) throw new ReportError("input.image is not valid base64");
  const png = Buffer.from(encoded, "base64");
  if (png.length > MAX_IMAGE) throw new ReportError("input.image is larger than 64 KiB");
  if (!png.subarray(0, PNG_SIGNATURE.length).equals(PNG_SIGNATURE)) throw new ReportError("input.image is not a PNG");
  return image;
}

/** An input prompt (`{id, kind, label, secret, expires_in, ...}` plus the kind's own fields). */
export function inputPrompt(value) {
  object(value, "input");
  if (!INPUT_KINDS.includes(value.kind)) throw new ReportError(`input.kind must be one of ${INPUT_KINDS.join(", ")}`);
  const kind = value.kind;
  const id = value.id ?? kind;
  if (typeof id !== "string" || !INPUT_ID.test(id)) {
    throw new ReportError("input.id must be 1-64 letters, digits or _.:-");
  }
  if (value.secret !== undefined && typeof value.secret !== "boolean") throw new ReportError("input.secret must be true or false");
  const out = {
    id,
    kind,
    label: required(value.label, "input.label", 200),
    // Captchas and codes are answered like the SMS code (read once, never at rest), whatever the bot says.
    secret: Boolean(value.secret) || SECRET_KINDS.has(kind),
    expires_in: int(value.expires_in ?? 120, "input.expires_in", 10, 3600),
  };
  const attemptsLeft = optionalInt(value.attempts_left, "input.attempts_left", 0, 100);
  if (attemptsLeft !== undefined) out.attempts_left = attemptsLeft;
  const error = text(value.error, "input.error", 200);
  if (error) out.error = error;
  if (kind === "captcha") {
    out.image = checkedPng(value.image);
    const length = optionalInt(value.length, "input.length", 1, 32);
    if (length !== undefined) out.length = length;
  } else if (kind === "choice") {
    if (!Array.isArray(value.options) || value.options.length < 2 || value.options.length > MAX_OPTIONS) {
      throw new ReportError(`input.options must hold 2 to ${MAX_OPTIONS} choices`);
    }
    out.options = value.options.map((o, i) => {
      object(o, `input.options[${i}]`);
      const optionValue = required(o.value, `input.options[${i}].value`, 64);
      return { value: optionValue, label: text(o.label, `input.options[${i}].label`, 200) ?? optionValue };
    });
    if (new Set(out.options.map((o) => o.value)).size !== out.options.length) {
      throw new ReportError("input.options must have distinct values");
    }
  } else if (kind === "text") {
    out.max_length = int(value.max_length ?? 100, "input.max_length", 1, MAX_ANSWER);
    const pattern = text(value.pattern, "input.pattern", 200);
    if (pattern) {
      try {
        new RegExp(pattern, "u");
      } catch {
        throw new ReportError("input.pattern is not a valid regular expression");
      }
      // The server matches answers with RE2 (linear time), which has none of these: lookarounds,
      // backreferences, JavaScript's empty classes ([] and [^]), counts over 1000.
      const counts = [...pattern.matchAll(/\{(\d+)(?:,(\d*))?\}/g)].flatMap((m) => [m[1], m[2]]).filter(Boolean);
      if (/\(\?<?[=!]|\\[1-9]|\\k<|(^|[^\\])\[\^?\]/.test(pattern) || counts.some((n) => Number(n) > 1000)) {
        throw new ReportError("input.pattern must be a regular expression RE2 accepts (no lookarounds, backreferences, [] or [^], or counts over 1000)");
      }
      out.pattern = pattern;
    }
  } else if (kind === "code") {
    const otp = otpPrompt({ length: value.length, destination_hint: value.destination_hint, expires_in: out.expires_in });
    out.length = otp.length;
    out.destination_hint = otp.destination_hint;
  }
  return out;
}

export function inputRequiredEvent(input) {
  return { type: "input_required", input: inputPrompt(input) };
}
