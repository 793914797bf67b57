/**
 * The sstable-tde command line. The library stays quiet; this is the one place that writes to
 * the console and decides exit codes: 0 success, 1 failure, 2 usage error.
 */
import { Command, CommanderError } from 'commander';

import { EXIT_OK, EXIT_USAGE, Io, processIo } from './common';
import { createSystemKeyCommand } from './createsystemkey';
import { commitLogCommand } from './commitlog';
import { describeCommand } from './describe';
import { encryptConfigValueCommand } from './encryptconfigvalue';
import { manageKmipCommand } from './managekmip';
import { upgradeSSTablesCommand } from './upgradesstables';
import { verifyCommand } from './verify';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { version } = require('../../package.json') as { version: string };

/** Runs the CLI with `argv` (without node and script) and resolves to the exit code. */
export async function run(argv: string[], io: Io = processIo()): Promise<number> {
  let code: number | undefined;
  const done = (c: number) => {
    code ??= c;
  };

  const program = new Command('sstable-tde')
    .description('Transparent data encryption for Cassandra SSTables (DSE-compatible TDE)')
    .version(version)
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) })
    .exitOverride();
  // Every command, nested ones included, reports through `io` and returns instead of exiting.
  const setUp = (cmd: Command) => {
    cmd
      .exitOverride()
      .showHelpAfterError('(run with --help for usage)')
      .configureOutput({
        writeOut: (s) => io.out(s.trimEnd()),
        writeErr: (s) => io.err(s.trimEnd()),
      });
    checkRequiredAfterUnknown(cmd);
    cmd.commands.forEach(setUp);
  };
  for (const make of [
    createSystemKeyCommand,
    upgradeSSTablesCommand,
    verifyCommand,
    describeCommand,
    encryptConfigValueCommand,
    manageKmipCommand,
    commitLogCommand,
  ]) {
    program.addCommand(make(io, done));
  }
  setUp(program);

  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit 0; help shown because something was missing is a usage error.
      return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    throw err;
  }
  if (code === undefined) {
    // No command given.
    program.outputHelp({ error: true });
    return EXIT_USAGE;
  }
  return code;
}

export function main(): void {
  // A reader that went away (`| head`) is not an error worth a stack trace.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw err;
    });
  }
  run(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      process.stderr.write(
        `sstable-tde: internal error: ${err instanceof Error ? err.stack : String(err)}\n`,
      );
      process.exitCode = 1;
    },
  );
}

/**
 * Commander reports a missing required option before an unknown one, so a mistyped
 * `--datadir x` would be told that --data-dir is missing, with no word about the typo. The
 * required options are checked just before the action instead, after the unknown ones (whose
 * error suggests the option meant).
 */
function checkRequiredAfterUnknown(cmd: Command): void {
  const required = cmd.options.filter((o) => o.mandatory);
  if (required.length === 0) return;
  for (const o of required) o.makeOptionMandatory(false);
  cmd.hook('preAction', () => {
    for (const o of required) {
      if (cmd.getOptionValue(o.attributeName()) === undefined) {
        cmd.error(`error: required option '${o.flags}' not specified`, {
          code: 'commander.missingMandatoryOptionValue',
        });
      }
    }
  });
}
