/** `commitlog verify SEGMENT...`: decrypt and decompress every block, check every checksum. */
import { Command } from 'commander';

import { configResolver, keyStoreResolver } from '../commitlog/keys';
import { readSegment, SegmentKeyResolver, SegmentReport } from '../commitlog/segment';
import { isTdeError } from '../errors';
import { KeyProviders } from '../keys/provider';
import {
  addConfigOption,
  configFrom,
  EXIT_FAILURE,
  EXIT_OK,
  Io,
  plural,
  reportError,
} from './common';

interface Options {
  keystore?: string;
  keystorePassword?: string;
  keyPassword?: string;
  storeType?: string;
  config?: string;
  json?: boolean;
}

export function commitLogCommand(io: Io, done: (code: number) => void): Command {
  const cmd = new Command('commitlog').description('encrypted commit log segments');
  const verify = new Command('verify')
    .description(
      'read encrypted commit log segments through: decrypt, decompress, check every checksum',
    )
    .argument('<segments...>', 'CommitLog-*.log files')
    .option(
      '--keystore <file>',
      'the JCEKS key store Cassandra wrote the segments with (transparent_data_encryption_options)',
    )
    .option('--keystore-password <password>', 'its keystore_password')
    .option('--key-password <password>', 'its key_password (default: the keystore password)')
    .option('--store-type <type>', 'store_type (JCEKS)', 'JCEKS')
    .option('--json', 'print a JSON report');
  addConfigOption(verify);
  verify.addHelpText(
    'after',
    `
Examples:
  sstable-tde commitlog verify /var/lib/cassandra/commitlog/CommitLog-7-*.log \\
      --keystore conf/.keystore --keystore-password cassandra
  sstable-tde commitlog verify CommitLog-7-1700000000000.log --config dse.yaml --json

Segments written by sstable-tde (system_info_encryption) name their key by key file or
kmip://GROUP/ID and need --config instead of a key store. Exits 1 if any segment could not be
read to its end; the report says where each stopped and why.`,
  );

  verify.action(async (segments: string[], opts: Options) => {
    const json = Boolean(opts.json);
    let keys: KeyProviders | undefined;
    try {
      let resolve: SegmentKeyResolver;
      if (opts.keystore) {
        if (opts.keystorePassword === undefined) {
          io.err('sstable-tde: --keystore needs --keystore-password');
          done(2);
          return;
        }
        resolve = keyStoreResolver({
          file: opts.keystore,
          password: opts.keystorePassword,
          keyPassword: opts.keyPassword,
          type: opts.storeType,
        });
      } else {
        // A key store password without --keystore would be ignored: the key comes from --config.
        const named = [
          opts.keystorePassword !== undefined ? '--keystore-password' : '',
          opts.keyPassword !== undefined ? '--key-password' : '',
        ].filter(Boolean);
        if (named.length > 0) {
          io.err(
            `sstable-tde: ${named.join(' and ')} only ${named.length === 1 ? 'applies' : 'apply'} ` +
              'with --keystore FILE (without it, ' +
              'the key comes from --config)',
          );
          done(2);
          return;
        }
        const config = configFrom(opts);
        keys = new KeyProviders(config);
        resolve = configResolver(config, keys);
      }

      const reports: (
        SegmentReport | { file: string; error: { code: string; message: string } }
      )[] = [];
      let failed = 0;
      for (const file of segments) {
        try {
          const r = await readSegment(file, resolve);
          reports.push(r);
          if (!r.complete) failed++;
          if (!json) {
            const what =
              `${plural(r.sections, 'section')}, ${plural(r.blocks, 'block')}, ` +
              `${plural(r.entries, 'entry', 'entries')}, ${r.dataBytes} bytes of data in ` +
              `${r.storedBytes} bytes${r.cipher ? ` (${r.cipher}, key ${r.keyAlias})` : ''}`;
            if (r.complete) io.out(`ok     ${file}: ${what}`);
            else {
              io.out(`FAULT  ${file}: ${what}, then stopped`);
              const code = r.stoppedAt?.code;
              io.out(
                `         [${code}] at byte ${r.stoppedAt?.offset}: ${r.stoppedAt?.reason}; ` +
                  'everything before it was read and checked',
              );
            }
          }
        } catch (err) {
          if (!isTdeError(err)) throw err;
          failed++;
          reports.push({ file, error: { code: err.code, message: err.message } });
          if (!json) io.out(`FAULT  ${file}: [${err.code}] ${err.message}`);
        }
      }
      if (json) io.out(JSON.stringify(reports, null, 2));
      done(failed > 0 ? EXIT_FAILURE : EXIT_OK);
    } catch (err) {
      done(reportError(io, err, json));
    } finally {
      keys?.close();
    }
  });
  cmd.addCommand(verify);
  return cmd;
}
