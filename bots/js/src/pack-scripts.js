// `npm pack` / `npm publish`: a tarball carries a copy of the server's .lua files (outside
// the repository there is no ../../server to read them from).
import { copyFileSync, mkdirSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";

const from = fileURLToPath(new URL("../../../server/record/scripts/", import.meta.url));
const to = fileURLToPath(new URL("../scripts/", import.meta.url));
mkdirSync(to, { recursive: true });
for (const name of readdirSync(from).filter((n) => n.endsWith(".lua"))) copyFileSync(from + name, to + name);
