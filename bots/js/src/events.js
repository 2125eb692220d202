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
