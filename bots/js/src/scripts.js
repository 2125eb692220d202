// The server's own Lua scripts, assembled exactly as server/record/lua.py assembles them:
// the files a script's leading comment block names with `--!include NAME`, in order, then
// the script itself, joined by newlines. Same text, same SHA1, so EVALSHA finds a script
// the Python server loaded (and the other way round).
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const INCLUDE = /^--!include (\S+)$/;

/** Where the .lua files are: LONGRUN_SCRIPTS_DIR, the copy a packed tarball carries, or the repository's. */
export function scriptsDir() {
  if (process.env.LONGRUN_SCRIPTS_DIR) return process.env.LONGRUN_SCRIPTS_DIR;
  const packed = fileURLToPath(new URL("../scripts/", import.meta.url));
  if (existsSync(packed)) return packed;
  return fileURLToPath(new URL("../../../server/record/scripts/", import.meta.url));
}

/** The files a script's leading comment block names with `--!include` (includes do not nest). */
export function includes(text) {
  const names = [];
  for (const line of text.split(/\r?\n/)) {
    if (!line.startsWith("--")) break;
    const match = INCLUDE.exec(line);
    if (match) names.push(match[1]);
  }
  return names;
}

/** The full text of `{name}.lua`: its includes, then itself. */
export function loadScript(name, dir = scriptsDir()) {
  const read = (file) => readFileSync(new URL(file, `file://${dir.endsWith("/") ? dir : dir + "/"}`), "utf8");
  const text = read(`${name}.lua`);
  return [...includes(text).map(read), text].join("\n");
}

/** The SHA1 EVALSHA names a script by. */
export function scriptSha(text) {
  return createHash("sha1").update(text, "utf8").digest("hex");
}
