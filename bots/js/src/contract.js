// The values the Python server owns (messages, catalog facts, defaults), read from
// contract.json, which tests/test_node_sdk.py keeps identical to the Python owners.
import { readFileSync } from "node:fs";

export const CONTRACT = JSON.parse(readFileSync(new URL("./contract.json", import.meta.url), "utf8"));

/** `current_message` + `message_key` (+ params) for a patch, as server/domain/messages.py builds it. */
export function message(key, params = null) {
  let text = CONTRACT.messages[key];
  for (const [name, value] of Object.entries(params ?? {})) text = text.replaceAll(`{${name}}`, String(value));
  const hasParams = params && Object.keys(params).length > 0;
  return { current_message: text, message_key: key, message_params: hasParams ? params : null };
}
