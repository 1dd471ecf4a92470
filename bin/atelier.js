#!/usr/bin/env node
// The CLI runs from the compiled output; `npm install` builds it (prepare script).
const { existsSync } = require('node:fs');
const { join } = require('node:path');

const entry = join(__dirname, '..', 'dist', 'cli', 'main.js');
if (!existsSync(entry)) {
  process.stderr.write('atelier is not built yet: run `npm install` (or `npm run build`) in the repository first.\n');
  process.exit(1);
}
require(entry)
  .main(process.argv)
  .then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`error: ${err && err.stack ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
