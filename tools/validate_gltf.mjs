#!/usr/bin/env node
// Validate glTF / GLB files with the official Khronos glTF-Validator (npm "gltf-validator").
//
// Install once (pinned in tools/package.json / package-lock.json):
//     npm ci --prefix tools
// Usage:
//     node tools/validate_gltf.mjs FILE.glb [FILE.glb ...]
// Prints one JSON line per file: {"file", "errors", "warnings", "infos", "hints", "messages"}.
// Exit status: 0 when no file has errors or warnings, 1 otherwise, 2 on bad usage / load failure.

import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
let validator;
try {
  validator = require(path.join(here, "node_modules", "gltf-validator"));
} catch (err) {
  console.error("gltf-validator is not installed: run `npm ci --prefix tools`");
  process.exit(2);
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node tools/validate_gltf.mjs FILE.glb [FILE.glb ...]");
  process.exit(2);
}

let failed = false;
for (const file of files) {
  let report;
  try {
    const data = await readFile(file);
    report = await validator.validateBytes(new Uint8Array(data), {
      uri: path.basename(file),
      maxIssues: 100,
    });
  } catch (err) {
    console.error(`${file}: ${err}`);
    process.exit(2);
  }
  const issues = report.issues;
  const summary = {
    file,
    errors: issues.numErrors,
    warnings: issues.numWarnings,
    infos: issues.numInfos,
    hints: issues.numHints,
    messages: issues.messages.map((m) => `${m.severity}:${m.code}:${m.pointer ?? ""}:${m.message}`),
  };
  console.log(JSON.stringify(summary));
  if (issues.numErrors > 0 || issues.numWarnings > 0) failed = true;
}
process.exit(failed ? 1 : 0);
