/** `describe`: format, compression, encryption and sizes of each SSTable. */
import { Command } from 'commander';

import { readConfig } from '../config/config';
import { describeDataDirectory } from '../tools/describe';
import { EXIT_FAILURE, EXIT_OK, Io, plural, reportError } from './common';

export function describeCommand(io: Io, done: (code: number) => void): Command {
  const cmd = new Command('describe')
    .description('show format version, compressor, encryption, chunking and sizes of each SSTable')
    .argument('[keyspace]', 'only this keyspace')
    .argument('[tables...]', 'only these tables of the keyspace')
    .requiredOption('--data-dir <dir>', 'Cassandra data directory')
    .option('--json', 'print JSON instead of text')
    .option(
      '--config <file>',
      'accepted for symmetry with the other commands; describe needs no key',
    );
  cmd.addHelpText(
    'after',
    `
Examples:
  sstable-tde describe --data-dir /var/lib/cassandra/data
  sstable-tde describe --data-dir data --json cycling

No key is needed: describe reads metadata only, and never shows key bytes.`,
  );

  cmd.action(
    (
      keyspace: string | undefined,
      tables: string[],
      opts: { dataDir: string; json?: boolean; config?: string },
    ) => {
      const json = Boolean(opts.json);
      try {
        // not needed, but a wrong one should not pass unnoticed
        if (opts.config) readConfig(opts.config);
        const rows = describeDataDirectory(opts.dataDir, keyspace, tables);
        if (json) {
          io.out(JSON.stringify(rows, null, 2));
        } else {
          for (const r of rows) {
            io.out(`${r.sstable}  (${r.format} ${r.version}, generation ${r.generation})`);
            if (r.error) {
              io.out(`  unreadable: [${r.error.code}] ${r.error.message}`);
              continue;
            }
            io.out(`  ${r.summary}${r.encrypted ? '  [encrypted]' : ''}`);
            const opts = Object.entries(r.options)
              .map(([k, v]) => `${k}=${v}`)
              .join(', ');
            if (opts) io.out(`  options: ${opts}`);
            io.out(
              `  ${plural(r.chunkCount, 'chunk')} of ${r.chunkLength} bytes; ` +
                `${r.dataBytes} bytes of data, ${r.storedBytes} bytes in Data.db`,
            );
            io.out(`  components: ${r.components.join(' ')}`);
            if (r.encrypted) io.out(`  encrypted: ${r.encryptedComponents.join(' ')}`);
          }
          if (rows.length === 0) {
            io.err(
              `sstable-tde: found no SSTable under ${opts.dataDir}: is --data-dir the directory ` +
                `that holds the keyspace directories (KEYSPACE/TABLE/)?`,
            );
            done(EXIT_FAILURE);
            return;
          }
        }
        done(rows.some((r) => r.error) ? EXIT_FAILURE : EXIT_OK);
      } catch (err) {
        done(reportError(io, err, json));
      }
    },
  );
  return cmd;
}
