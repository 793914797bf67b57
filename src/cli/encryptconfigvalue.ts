/**
 * `encryptconfigvalue`: prints a value encrypted with the configured system key, to paste into
 * dse.yaml or cassandra.yaml in place of a password. On a terminal it asks twice without echo;
 * otherwise it reads one line from standard input.
 */
import { Command } from 'commander';

import { DEFAULT_CONFIG_KEY_NAME } from '../config/config';
import { configKey, encryptValue } from '../config/secure-values';
import { TdeError } from '../errors';
import { KeyProviders } from '../keys/provider';
import { addConfigOption, configFrom, EXIT_OK, Io, reportError } from './common';

/** Reads a line from a terminal without echoing it. */
function promptHidden(prompt: string, io: Io): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    io.stderr.write(prompt);
    stdin.setRawMode?.(true);
    stdin.resume();
    let value = '';
    const onData = (d: Buffer) => {
      for (const ch of d.toString('utf8')) {
        if (ch === '\r' || ch === '\n') {
          finish();
          resolve(value);
          return;
        }
        if (ch === '\u0003') {
          finish();
          reject(new TdeError('ERR_TDE_CANCELLED', 'interrupted'));
          return;
        }
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else value += ch;
      }
    };
    const finish = () => {
      stdin.removeListener('data', onData);
      stdin.setRawMode?.(false);
      stdin.pause();
      io.stderr.write('\n');
    };
    stdin.on('data', onData);
  });
}

/** More than any password: input past this is not one value. */
const MAX_INPUT_BYTES = 64 * 1024;

/**
 * The one value on standard input: its first line (without its line end), read to the end of
 * the input so that a second line is refused rather than silently dropped. The bytes are decoded
 * once, so a character split between two reads of the pipe stays whole.
 */
async function readLine(): Promise<string> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of process.stdin) {
    chunks.push(chunk as Buffer);
    bytes += (chunk as Buffer).length;
    if (bytes > MAX_INPUT_BYTES) break;
  }
  const lines = Buffer.concat(chunks).toString('utf8').split(/\r?\n/);
  if (bytes > MAX_INPUT_BYTES || lines.slice(1).some((l) => l !== '')) {
    throw new TdeError(
      'ERR_TDE_INVALID_ARGUMENT',
      'standard input holds more than one line; encryptconfigvalue encrypts one value, given ' +
        'on one line: nothing was encrypted',
    );
  }
  return lines[0];
}

export function encryptConfigValueCommand(io: Io, done: (code: number) => void): Command {
  const cmd = new Command('encryptconfigvalue')
    .description(
      'encrypt a configuration value (a password) with the system key, for dse.yaml or ' +
        'cassandra.yaml',
    )
    .option('--json', 'print the result as JSON');
  addConfigOption(cmd);
  cmd.addHelpText(
    'after',
    `
Examples:
  sstable-tde encryptconfigvalue --config dse.yaml
  printf '%s\\n' "$PASSWORD" | sstable-tde encryptconfigvalue --config dse.yaml

The key is config_encryption_key_name (default ${DEFAULT_CONFIG_KEY_NAME}): a key file in
system_key_directory, or kmip://GROUP/KEY_ID. The output is base64 of [IV][ciphertext], as DSE
writes encrypted values.`,
  );

  cmd.action(async (opts: { config?: string; json?: boolean }) => {
    const json = Boolean(opts.json);
    const config = (() => {
      try {
        return configFrom(opts);
      } catch (err) {
        done(reportError(io, err, json));
        return undefined;
      }
    })();
    if (!config) return;
    const keys = new KeyProviders(config);
    try {
      const key = await configKey(config, keys, { encrypting: true });
      try {
        io.err(`Using system key ${key.name}`);
        let value: string;
        if (process.stdin.isTTY) {
          value = await promptHidden('Enter value to encrypt: ', io);
          const again = await promptHidden('Enter again to confirm: ', io);
          if (again !== value)
            throw new TdeError(
              'ERR_TDE_INVALID_ARGUMENT',
              'the two entries differ; nothing was encrypted',
            );
        } else {
          value = await readLine();
        }
        if (value === '') {
          throw new TdeError(
            'ERR_TDE_INVALID_ARGUMENT',
            'the value to encrypt is empty ' +
              '(standard input held no line, or an empty one); nothing was encrypted. Give the ' +
              'value on one line, e.g. printf \'%s\\n\' "$PASSWORD" | sstable-tde ' +
              'encryptconfigvalue --config FILE',
          );
        }
        const out = encryptValue(key.cipher, value);
        io.out(
          json ? JSON.stringify({ key: key.name, value: out }) : `Your encrypted value is: ${out}`,
        );
      } finally {
        key.cipher.destroy();
      }
      done(EXIT_OK);
    } catch (err) {
      done(reportError(io, err, json));
    } finally {
      keys.close();
    }
  });
  return cmd;
}
