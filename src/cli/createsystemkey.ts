/** `createsystemkey CIPHER STRENGTH [NAME] [-d DIR]`: a new local system key file. */
import * as path from 'node:path';

import { Command } from 'commander';

import { DEFAULT_SYSTEM_KEY_FILE } from '../compression/options';
import { createKeyFile } from '../keys/key-file';
import { addConfigOption, configFrom, EXIT_OK, Io, reportError } from './common';

export function createSystemKeyCommand(io: Io, done: (code: number) => void): Command {
  const cmd = new Command('createsystemkey')
    .description('create a local system key file (one line ALG/MODE/PADDING:BITS:BASE64KEY, mode 0600)')
    .argument('<cipher>', 'JCE transformation, e.g. AES/CBC/PKCS5Padding')
    .argument('<strength>', 'key strength in bits, e.g. 128')
    .argument('[name]', 'file name inside the key directory', DEFAULT_SYSTEM_KEY_FILE)
    .option('-d, --directory <dir>', 'directory for the key file (default: system_key_directory of --config)')
    .option('--json', 'print the result as JSON');
  addConfigOption(cmd);
  cmd.addHelpText('after', `
Examples:
  sstable-tde createsystemkey AES/CBC/PKCS5Padding 128 -d /etc/dse/conf
  sstable-tde createsystemkey AES/ECB/PKCS5Padding 256 table_key --config dse.yaml

The file is never overwritten: data encrypted with an existing key would become unreadable.`);

  cmd.action((cipher: string, strength: string, name: string, opts: { directory?: string; config?: string; json?: boolean }) => {
    try {
      const dir = opts.directory ?? configFrom(opts).systemKeyDirectory;
      const { file, choice } = createKeyFile(path.resolve(dir), name, cipher, strength);
      if (opts.json) {
        io.out(JSON.stringify({ file, cipher_algorithm: choice.name, secret_key_strength: choice.strength }));
      } else {
        io.out(`Created system key file ${file} (${choice.name}, ${choice.strength} bits, mode 0600).`);
        io.out('Back it up somewhere safe: data encrypted with it cannot be read without it.');
      }
      done(EXIT_OK);
    } catch (err) {
      done(reportError(io, err, Boolean(opts.json)));
    }
  });
  return cmd;
}
