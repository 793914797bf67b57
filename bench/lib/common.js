'use strict';
/**
 * What every benchmark shares: the machine description, the shape of a result, and the way a
 * suite runs on its own (`node bench/cipher.js`) or as part of `npm run bench`.
 *
 * A case is { suite, name, mbps, baseline: { name, mbps } | null, ratio | null, target? }, where
 * the baseline was measured in the same run and `target`, when the project sets one, is
 * { ratio, met }. Nothing here passes or fails: targets are read off the ratios.
 */
const fs = require('node:fs');
const os = require('node:os');

function cores() {
  return os.availableParallelism ? os.availableParallelism() : os.cpus().length;
}

function machine() {
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: cores(),
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
  };
}

/** A result, with its ratio to the baseline and, when given, whether the target ratio is met. */
function result(suite, name, mbps, baseline, target, extra = {}) {
  const ratio = baseline && baseline.mbps > 0 ? mbps / baseline.mbps : null;
  const out = {
    suite,
    name,
    mbps: round(mbps, 1),
    baseline: baseline ? { name: baseline.name, mbps: round(baseline.mbps, 1) } : null,
    ratio: ratio === null ? null : round(ratio, 3),
    ...extra,
  };
  if (target !== undefined && ratio !== null) out.target = { ratio: target, met: ratio >= target };
  return out;
}

function round(x, digits) {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** One line of a suite's table. */
function line(c) {
  const base = c.baseline
    ? `${c.ratio.toFixed(2).padStart(6)}x ${c.baseline.name} (${c.baseline.mbps.toFixed(0)} MB/s)`
    : '';
  const target = c.target ? `  target ${c.target.ratio}x: ${c.target.met ? 'met' : 'NOT met'}` : '';
  return `${c.name.padEnd(60)} ${c.mbps.toFixed(0).padStart(7)} MB/s  ${base}${target}\n`;
}

/**
 * Runs `suite` as a script: options from argv, a table while it runs, one JSON document at the end.
 */
function main(suite) {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const json = args.includes('--json') ? args[args.indexOf('--json') + 1] : undefined;
  suite
    .run({ quick, args, log: (s) => process.stdout.write(s) })
    .then((cases) => {
      const doc = { machine: machine(), date: new Date().toISOString(), quick, cases };
      if (json) fs.writeFileSync(json, JSON.stringify(doc, null, 2) + '\n');
      process.stdout.write('\n' + JSON.stringify(doc) + '\n');
    })
    .catch((err) => {
      process.stderr.write(`${err.stack || err}\n`);
      process.exit(1);
    });
}

module.exports = { cores, machine, result, line, main, round };
