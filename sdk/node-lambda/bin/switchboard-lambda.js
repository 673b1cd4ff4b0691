#!/usr/bin/env node
import { main } from '../src/cli.js';

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`switchboard-lambda: ${err instanceof Error ? err.message : err}\n`);
    process.exit(1);
  },
);
