'use strict';
/**
 * One measured run, in its own process so that its peak memory is its own:
 *   node rewrite-child.js upgrade DATA_DIR SCHEMA_FILE KEY_DIR
 *   node rewrite-child.js verify DATA_DIR KEY_DIR
 * Prints one JSON line: { seconds, bytes, maxRssMiB }.
 */
const fs = require('node:fs');

const tde = require('../../dist');

async function main() {
  const [verb, dataDir, a, b] = process.argv.slice(2);
  const keyDir = verb === 'upgrade' ? b : a;
  const config = tde.configFromObject({ system_key_directory: keyDir });
  const start = process.hrtime.bigint();
  let bytes = 0;
  if (verb === 'upgrade') {
    const schema = tde.parseSchema(fs.readFileSync(a, 'utf8'));
    const report = await tde.upgradeSSTables({ dataDir, config, schema, includeAll: true,
      onEvent: (e) => { if (e.type === 'progress') bytes = e.bytes; } });
    if (report.failed !== 0 || report.rewritten !== 1) throw new Error(JSON.stringify(report.results));
  } else {
    const report = await tde.verifyDataDirectory({ dataDir, config });
    if (report.faults !== 0) throw new Error(JSON.stringify(report));
    bytes = report.sstables.reduce((n, s) => n + s.dataBytes, 0);
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  // VmHWM: this process's own peak. getrusage's maxRSS would also count the parent's peak,
  // which a child inherits through fork.
  const hwm = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  const maxRssMiB = hwm ? Number(hwm[1]) / 1024 : process.resourceUsage().maxRSS / 1024;
  process.stdout.write(JSON.stringify({ seconds, bytes, maxRssMiB }) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
