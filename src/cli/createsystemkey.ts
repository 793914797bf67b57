/**
 * `createsystemkey CIPHER STRENGTH [NAME] [-d DIR] [-k GROUP [-t TEMPLATE] [-n NAMESPACE]]`: a new
 * local system key file, or (with -k) a new key on a KMIP group, printed as kmip://GROUP/ID.
 */
import * as path from 'node:path';

import { Command } from 'commander';

import { resolveCipher } from '../cipher/transformation';
import { DEFAULT_SYSTEM_KEY_FILE } from '../compression/options';
import { createKeyFile } from '../keys/key-file';
import { createKmipKey } from '../keys/kmip-admin';
import { KeyProviders } from '../keys/provider';
import { addConfigOption, configFrom, EXIT_OK, EXIT_USAGE, Io, reportError } from './common';

interface Options {
  directory?: string;
  kmip?: string;
  template?: string;
  namespace?: string;
  config?: string;
  json?: boolean;
}

export function createSystemKeyCommand(io: Io, done: (code: number) => void): Command {
  const cmd = new Command('createsystemkey')
    .description(
      'create a system key: a local key file (ALG/MODE/PADDING:BITS:BASE64KEY, mode 0600), or ' +
        'with -k a key on a KMIP server',
    )
    .argument('<cipher>', 'JCE transformation, e.g. AES/CBC/PKCS5Padding')
    .argument('<strength>', 'key strength in bits, e.g. 128')
    .argument('[name]', 'file name inside the key directory (local keys)', DEFAULT_SYSTEM_KEY_FILE)
    .option(
      '-d, --directory <dir>',
      'directory for the key file (default: system_key_directory of --config)',
    )
    .option('-k, --kmip <group>', 'create the key on this kmip_hosts group instead of in a file')
    .option('-t, --template <template>', 'with -k: a key template defined on the KMIP server')
    .option(
      '-n, --namespace <namespace>',
      'with -k: the key namespace (as key_namespace in table options)',
    )
    .option('--json', 'print the result as JSON');
  addConfigOption(cmd);
  cmd.addHelpText(
    'after',
    `
Examples:
  sstable-tde createsystemkey AES/CBC/PKCS5Padding 128 -d /etc/dse/conf
  sstable-tde createsystemkey AES/ECB/PKCS5Padding 256 table_key --config dse.yaml
  sstable-tde createsystemkey AES/ECB/PKCS5Padding 128 -k kmip_group --config dse.yaml

A key file is never overwritten: data encrypted with an existing key would become unreadable.
With -k the key is created and activated on the KMIP server and its URL is printed, for
config_encryption_key_name; tables with key_provider KmipKeyProviderFactory find it by cipher,
strength and namespace.`,
  );

  cmd.action(async (cipher: string, strength: string, name: string, opts: Options) => {
    const json = Boolean(opts.json);
    if (!opts.kmip && (opts.template || opts.namespace)) {
      io.err('sstable-tde: -t and -n go with -k GROUP (a KMIP key)');
      done(EXIT_USAGE);
      return;
    }
    try {
      if (opts.kmip) {
        const config = configFrom(opts);
        const choice = resolveCipher(cipher, strength);
        const keys = new KeyProviders(config);
        try {
          const client = keys.kmipProvider.client(opts.kmip);
          const id = await createKmipKey(client, choice, {
            namespace: opts.namespace,
            template: opts.template,
          });
          const url = `kmip://${opts.kmip}/${id}`;
          io.out(
            json
              ? JSON.stringify({
                  url,
                  group: opts.kmip,
                  id,
                  cipher_algorithm: choice.name,
                  secret_key_strength: choice.strength,
                })
              : url,
          );
        } finally {
          keys.close();
        }
        done(EXIT_OK);
        return;
      }
      const dir = opts.directory ?? configFrom(opts).systemKeyDirectory;
      const { file, choice } = createKeyFile(path.resolve(dir), name, cipher, strength);
      if (json) {
        io.out(
          JSON.stringify({
            file,
            cipher_algorithm: choice.name,
            secret_key_strength: choice.strength,
          }),
        );
      } else {
        io.out(
          `Created system key file ${file} (${choice.name}, ${choice.strength} bits, mode 0600).`,
        );
        io.out('Back it up somewhere safe: data encrypted with it cannot be read without it.');
      }
      done(EXIT_OK);
    } catch (err) {
      done(reportError(io, err, json));
    }
  });
  return cmd;
}
