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

export function completedEvent(result) {
  if (typeof result !== "object" || result === null || Array.isArray(result)) {
    throw new ReportError("result must be a JSON object");
  }
  return { type: "completed", result };
}

export function failedEvent(error) {
  if (typeof error !== "string") throw new ReportError("error must be a string");
  // The record keeps 500 characters of it (Lifecycle.fail); the server refuses longer events.
  return { type: "failed", error: [...error].slice(0, MAX_TEXT).join("") };
}

// Any input from the person (DESIGN.md, "Additions": issue 14). The server's side is being
// built beside this; until it lands these are the contract's shapes, checked here so that a
// bot learns of a malformed prompt before anything is sent.
export const INPUT_KINDS = ["captcha", "choice", "confirm", "text", "code"];
const INPUT_ID = /^[A-Za-z0-9_.:-]{1,64}$/;
const MAX_IMAGE = 64 * 1024;

function object(value, what) {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new ReportError(`${what} must be a JSON object`);
  return value;
}

function required(value, what, limit) {
  const out = text(value, what, limit);
  if (!out) throw new ReportError(`${what} is required`);
  return out;
}

/** An input prompt (`{id, kind, label, secret, expires_in, ...}` plus the kind's own fields). */
export function inputPrompt(value) {
  object(value, "input");
  if (typeof value.id !== "string" || !INPUT_ID.test(value.id)) {
    throw new ReportError("input.id must be 1-64 letters, digits or _.:-");
  }
  if (!INPUT_KINDS.includes(value.kind)) throw new ReportError(`input.kind must be one of ${INPUT_KINDS.join(", ")}`);
  const kind = value.kind;
  if (value.secret !== undefined && typeof value.secret !== "boolean") throw new ReportError("input.secret must be true or false");
  const out = {
    id: value.id,
    kind,
    label: required(value.label, "input.label", 200),
    // Captchas and codes are answered like the SMS code (read once, never at rest).
    secret: value.secret ?? (kind === "captcha" || kind === "code"),
    expires_in: int(value.expires_in ?? 120, "input.expires_in", 10, 3600),
  };
  if (kind === "captcha") {
    const image = value.image;
    if (typeof image !== "string" || !image.startsWith("data:image/png;base64,")) {
      throw new ReportError("input.image must be a data:image/png;base64,… URL");
    }
    if (image.length > MAX_IMAGE) throw new ReportError("input.image is larger than 64 KiB");
    out.image = image;
    if (value.length !== undefined) out.length = int(value.length, "input.length", 1, 20);
  } else if (kind === "choice") {
    if (!Array.isArray(value.options) || value.options.length < 2 || value.options.length > 20) {
      throw new ReportError("input.options must hold 2 to 20 choices");
    }
    out.options = value.options.map((o, i) => {
      object(o, `input.options[${i}]`);
      return { value: required(o.value, `input.options[${i}].value`, 100), label: required(o.label, `input.options[${i}].label`, 200) };
    });
  } else if (kind === "text") {
    out.max_length = int(value.max_length ?? 200, "input.max_length", 1, 1000);
    const pattern = text(value.pattern, "input.pattern", 200);
    if (pattern) out.pattern = pattern;
  } else if (kind === "code") {
    Object.assign(out, otpPrompt({ length: value.length, destination_hint: value.destination_hint, expires_in: out.expires_in, attempts_left: value.attempts_left, error: value.error }));
  }
  return out;
}

export function inputRequiredEvent(input) {
  return { type: "input_required", input: inputPrompt(input) };
}
