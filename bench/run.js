#!/usr/bin/env node
/**
 * The benchmark suite: `npm run bench` (everything) or `npm run bench:quick` (a subset, under a
 * minute). Every case is compared with a baseline measured in the same run. Results go to
 * bench/results/ as JSON, a markdown table and an SVG chart of cipher throughput by chunk size
 * and thread count; the run ends by printing one JSON document.
 *
 *   node bench/run.js [--quick] [--only cipher,codec,rewrite,kmip,commitlog] [--sizes 64,512]
 */
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const { machine } = require('./lib/common');

const SUITES = {
  cipher: require('./cipher'),
  codec: require('./codec'),
  rewrite: require('./rewrite'),
  kmip: require('./kmip'),
  commitlog: require('./commitlog'),
};

function markdown(doc) {
  const m = doc.machine;
  const out = [
    `# sstable-tde benchmarks${doc.quick ? ' (quick)' : ''}`,
    '',
    `${doc.date}; ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, ${m.platform}.`,
    "Every baseline was measured in the same run. Targets are the project's, as ratios.",
    '',
  ];
  for (const suite of Object.keys(SUITES)) {
    const cases = doc.cases.filter((c) => c.suite === suite);
    if (cases.length === 0) continue;
    const ops = cases[0].mbps === null;
    out.push(`## ${suite}`, '');
    out.push(
      `| case | ${ops ? 'per second' : 'MB/s'} | baseline | ${ops ? 'per second' : 'MB/s'} | ` +
        `ratio | target |`,
    );
    out.push('|---|---:|---|---:|---:|---|');
    for (const c of cases) {
      const v = ops ? c.opsPerSecond : c.mbps;
      const b = c.baseline ? (ops ? c.baseline.opsPerSecond : c.baseline.mbps) : undefined;
      const targets = [];
      if (c.target) targets.push(`${c.target.ratio}x: ${c.target.met ? 'met' : '**not met**'}`);
      if (c.memoryTarget)
        targets.push(
          `< ${c.memoryTarget.maxRssMiB} MiB peak (${c.maxRssMiB}): ` +
            `${c.memoryTarget.met ? 'met' : '**not met**'}`,
        );
      out.push(
        `| ${c.name} | ${Math.round(v)} | ${c.baseline?.name ?? ''} | ` +
          `${b === undefined ? '' : Math.round(b)} | ` +
          `${c.ratio === null ? '' : c.ratio.toFixed(2)} | ${targets.join('; ')} |`,
      );
      if (c.node) {
        const t = c.node.target
          ? `${c.node.target.ratio}x: ${c.node.target.met ? 'met' : '**not met**'}`
          : '';
        out.push(
          `| ${c.name} | ${Math.round(v)} | ${c.node.name} | ${c.node.mbps} | ` +
            `${c.node.ratio.toFixed(2)} | ${t} |`,
        );
      }
      if (c.opensslConcurrent) {
        const o = c.opensslConcurrent;
        out.push(
          `| ${c.name} | ${Math.round(v)} | ${o.name} | ${o.mbps} | ${o.ratio.toFixed(2)} | |`,
        );
      }
    }
    out.push('');
  }
  return out.join('\n');
}

/** Cipher throughput by chunk size, one panel per thread count, one line per cipher (vega-lite). */
async function chart(doc) {
  const values = doc.cases
    .filter((c) => c.suite === 'cipher' && c.multiBuffer !== false && c.form !== 'spans')
    .map((c) => ({
      cipher: `${c.transformation} ${c.bits}`,
      chunk: `${c.chunkBytes / 1024} KiB`,
      threads: `${c.threads} thread${c.threads > 1 ? 's' : ''}`,
      mbps: c.mbps,
    }));
  if (values.length === 0) return undefined;
  const vega = await import('vega');
  const vl = await import('vega-lite');
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: `Chunk encryption throughput (${doc.machine.cpu}, ${doc.machine.cores} cores)`,
    data: { values },
    facet: { column: { field: 'threads', type: 'nominal', title: null } },
    spec: {
      width: 320,
      height: 260,
      mark: { type: 'line', point: true },
      encoding: {
        x: {
          field: 'chunk',
          type: 'ordinal',
          sort: ['4 KiB', '16 KiB', '64 KiB'],
          title: 'chunk size',
          axis: { labelAngle: 0 },
        },
        y: {
          field: 'mbps',
          type: 'quantitative',
          scale: { type: 'log' },
          title: 'MB/s (log scale)',
        },
        color: {
          field: 'cipher',
          type: 'nominal',
          title: 'transformation',
          legend: { labelLimit: 400 },
        },
      },
    },
  };
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  return view.toSVG();
}

/** A wrong command line: told in one line, without a stack trace. */
class Usage extends Error {}

async function main() {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const suites = Object.keys(SUITES).join(', ');
  const listed = args.includes('--only') ? args[args.indexOf('--only') + 1] : suites;
  const only = (listed ?? '').split(',').map((name) => name.trim());
  // Every name is checked before anything runs: a typo costs no minutes of benchmarking.
  for (const name of only) {
    if (!SUITES[name]) throw new Usage(`--only takes suite names from: ${suites} (not "${name}")`);
  }
  const log = (s) => process.stdout.write(s);
  const started = Date.now();
  const cases = [];
  for (const name of only) cases.push(...(await SUITES[name].run({ quick, args, log })));
  const doc = {
    machine: machine(),
    date: new Date().toISOString(),
    quick,
    seconds: Math.round((Date.now() - started) / 1000),
    cases,
  };

  const dir = path.join(__dirname, 'results');
  fs.mkdirSync(dir, { recursive: true });
  const base = path.join(dir, quick ? 'bench-quick' : 'bench');
  fs.writeFileSync(`${base}.json`, JSON.stringify(doc, null, 2) + '\n');
  fs.writeFileSync(`${base}.md`, markdown(doc) + '\n');
  const svg = await chart(doc);
  if (svg) fs.writeFileSync(`${base}-cipher.svg`, svg);
  log(
    `\nresults: ${path.relative(process.cwd(), base)}.json, ` +
      `.md${svg ? ', -cipher.svg' : ''} (${doc.seconds} s)\n`,
  );
  process.stdout.write(JSON.stringify(doc) + '\n');
}

main().catch((err) => {
  process.stderr.write(err instanceof Usage ? `bench: ${err.message}\n` : `${err.stack || err}\n`);
  process.exit(err instanceof Usage ? 2 : 1);
});
