#!/usr/bin/env node
// The shopctl command: src/main.ts with the process's arguments, environment and streams.
import { run } from "./main.js";

const code = await run(process.argv.slice(2), process.env, {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
});
// Exit once stdout is flushed: an idle HTTP/2 session would keep the process alive.
process.stdout.write("", () => process.exit(code));
