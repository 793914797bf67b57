/**
 * Reads the compression settings of tables from CQL: `CREATE TABLE` and `ALTER TABLE ... WITH
 * compression = {...}` statements, written as the DSE documentation writes them (for example the
 * output of `DESC KEYSPACE`). Everything else in the file is skipped, so a whole schema dump can
 * be given as is.
 */

import { TdeError } from '../errors';
import { readRegularFile } from '../util/files';
import { didYouMean, nearest } from '../util/suggest';

export interface TableSchema {
  keyspace: string;
  table: string;
  /** The compression map, or undefined when the table uses Cassandra's default. */
  compression?: Record<string, string>;
  /** Where the compression was last set, `file:line`, for messages. */
  source: string;
}

interface Token {
  kind: 'word' | 'quoted' | 'string' | 'number' | 'punct';
  text: string;
  line: number;
}

class SchemaError extends TdeError {
  constructor(file: string, line: number, what: string) {
    super('ERR_TDE_SCHEMA', `${file}:${line}: ${what}`, { file });
  }
}

function tokenize(text: string, file: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  let line = 1;
  const n = text.length;

  while (i < n) {
    const c = text[i];
    if (c === '\n') {
      line++;
      i++;
    } else if (/\s/.test(c)) {
      i++;
    } else if ((c === '-' && text[i + 1] === '-') || (c === '/' && text[i + 1] === '/')) {
      while (i < n && text[i] !== '\n') i++;
    } else if (c === '/' && text[i + 1] === '*') {
      const end = text.indexOf('*/', i + 2);
      if (end < 0) throw new SchemaError(file, line, 'a /* comment is never closed');
      for (let j = i; j < end; j++) if (text[j] === '\n') line++;
      i = end + 2;
    } else if (c === "'" || c === '"') {
      // '' inside a string and "" inside a quoted name stand for one quote.
      const start = line;
      let value = '';
      i++;
      for (;;) {
        if (i >= n) throw new SchemaError(file, start, `a ${c}-quoted text is never closed`);
        if (text[i] === c) {
          if (text[i + 1] === c) {
            value += c;
            i += 2;
            continue;
          }
          i++;
          break;
        }
        if (text[i] === '\n') line++;
        value += text[i++];
      }
      out.push({ kind: c === "'" ? 'string' : 'quoted', text: value, line: start });
    } else if (c === '$' && text[i + 1] === '$') {
      const end = text.indexOf('$$', i + 2);
      if (end < 0) throw new SchemaError(file, line, 'a $$ string is never closed');
      const value = text.slice(i + 2, end);
      out.push({ kind: 'string', text: value, line });
      line += value.split('\n').length - 1;
      i = end + 2;
    } else if (/[A-Za-z_]/.test(c)) {
      let j = i + 1;
      while (j < n && /[A-Za-z0-9_]/.test(text[j])) j++;
      out.push({ kind: 'word', text: text.slice(i, j), line });
      i = j;
    } else if (/[0-9]/.test(c) || (c === '-' && /[0-9]/.test(text[i + 1] ?? ''))) {
      let j = i + 1;
      // Numbers, and literals such as UUIDs that start with a digit: one token either way.
      while (
        j < n &&
        (/[0-9A-Za-z._]/.test(text[j]) ||
          (/[+-]/.test(text[j]) && /[0-9A-Za-z]/.test(text[j + 1] ?? '')))
      )
        j++;
      out.push({ kind: 'number', text: text.slice(i, j), line });
      i = j;
    } else {
      out.push({ kind: 'punct', text: c, line });
      i++;
    }
  }
  return out;
}

/** Splits tokens into statements at top-level semicolons. */
function statements(tokens: Token[]): Token[][] {
  const out: Token[][] = [];
  let current: Token[] = [];
  let depth = 0;
  for (const t of tokens) {
    if (t.kind === 'punct') {
      if ('({['.includes(t.text)) depth++;
      else if (')}]'.includes(t.text)) depth = Math.max(0, depth - 1);
      else if (t.text === ';' && depth === 0) {
        if (current.length > 0) out.push(current);
        current = [];
        continue;
      }
    }
    current.push(t);
  }
  if (current.length > 0) out.push(current);
  return out;
}

class Parser {
  at = 0;
  constructor(
    private readonly tokens: Token[],
    private readonly file: string,
  ) {}

  peek(offset = 0): Token | undefined {
    return this.tokens[this.at + offset];
  }

  isWord(word: string, offset = 0): boolean {
    const t = this.peek(offset);
    return t?.kind === 'word' && t.text.toLowerCase() === word;
  }

  fail(what: string): never {
    const t = this.peek() ?? this.tokens[this.tokens.length - 1];
    throw new SchemaError(
      this.file,
      t?.line ?? 0,
      `${what}${this.peek() ? `, found "${this.peek()?.text}"` : ' at the end of the statement'}`,
    );
  }

  expectPunct(p: string): void {
    const t = this.peek();
    if (t?.kind !== 'punct' || t.text !== p) this.fail(`expected "${p}"`);
    this.at++;
  }

  /** An identifier: unquoted names are case-insensitive (lower-cased), quoted ones kept. */
  name(): string {
    const t = this.peek();
    if (t?.kind === 'word') {
      this.at++;
      return t.text.toLowerCase();
    }
    if (t?.kind === 'quoted') {
      this.at++;
      return t.text;
    }
    return this.fail('expected a name');
  }

  /** `ks.table` or `table`. */
  qualifiedName(keyspace: string | undefined): { keyspace: string; table: string; line: number } {
    const line = this.peek()?.line ?? 0;
    const first = this.name();
    if (this.peek()?.kind === 'punct' && this.peek()?.text === '.') {
      this.at++;
      return { keyspace: first, table: this.name(), line };
    }
    if (!keyspace) {
      throw new SchemaError(
        this.file,
        line,
        `table ${first} has no keyspace: write KEYSPACE.${first} or put "USE KEYSPACE;" before it`,
      );
    }
    return { keyspace, table: first, line };
  }

  skipBalanced(): void {
    let depth = 0;
    do {
      const t = this.peek();
      if (!t) return;
      if (t.kind === 'punct' && '({['.includes(t.text)) depth++;
      if (t.kind === 'punct' && ')}]'.includes(t.text)) depth--;
      this.at++;
    } while (depth > 0);
  }

  mapLiteral(): Record<string, string> {
    this.expectPunct('{');
    const map: Record<string, string> = {};
    while (!(this.peek()?.kind === 'punct' && this.peek()?.text === '}')) {
      const k = this.peek();
      if (k?.kind !== 'string') this.fail("expected a quoted option name such as 'class'");
      this.at++;
      this.expectPunct(':');
      const v = this.peek();
      const constant = v?.kind === 'word' && ['true', 'false'].includes(v.text.toLowerCase());
      if (!v || !(v.kind === 'string' || v.kind === 'number' || constant)) {
        this.fail(`expected a quoted value, a number, true or false for '${k.text}'`);
      }
      if (Object.prototype.hasOwnProperty.call(map, k.text)) {
        throw new SchemaError(this.file, k.line, `option '${k.text}' is given twice in one map`);
      }
      this.at++;
      map[k.text] = v.text;
      if (this.peek()?.kind === 'punct' && this.peek()?.text === ',') this.at++;
      else if (!(this.peek()?.kind === 'punct' && this.peek()?.text === '}'))
        this.fail('expected "," or "}"');
    }
    this.at++;
    return map;
  }

  /**
   * `WITH a = x AND b = {...} AND CLUSTERING ORDER BY (...)`: returns the compression map, if any.
   */
  withOptions(): { compression?: Record<string, string>; line: number } | undefined {
    if (!this.isWord('with')) return undefined;
    this.at++;
    let found: { compression?: Record<string, string>; line: number } | undefined;
    while (this.peek()) {
      const name = this.peek();
      const flag = this.isWord('compact') || this.isWord('clustering');
      if (!flag && (name?.kind !== 'word' || this.peek(1)?.text !== '=')) {
        this.fail('expected a table option such as "compression = {...}"');
      }
      // A misspelt "compression" must not pass as some other option: the table would stay as it is.
      const word = name?.kind === 'word' ? name.text.toLowerCase() : '';
      if (!flag && word !== 'compression' && nearest(word, ['compression'])) {
        throw new SchemaError(
          this.file,
          name?.line ?? 0,
          `unknown table option "${name?.text}" (did you mean "compression"?)`,
        );
      }
      if (this.isWord('compression')) {
        const line = name?.line ?? 0;
        if (found)
          throw new SchemaError(this.file, line, 'compression is given twice in one statement');
        this.at += 2;
        found = { compression: this.mapLiteral(), line };
      } else {
        // Any other option: skip to the next top-level AND.
        while (this.peek() && !this.isWord('and')) this.skipBalanced();
      }
      if (this.isWord('and')) this.at++;
      else if (this.peek()) this.fail('expected AND between table options');
    }
    return found;
  }
}

/** First words of CQL statements; anything else is a typo that must not pass unnoticed. */
const STATEMENTS = [
  'create',
  'alter',
  'drop',
  'use',
  'insert',
  'update',
  'delete',
  'select',
  'truncate',
  'grant',
  'revoke',
  'list',
  'begin',
  'apply',
  'describe',
  'desc',
  'add',
  'comment',
];
/** What may follow CREATE or ALTER. */
const SCHEMA_OBJECTS = [
  'table',
  'columnfamily',
  'keyspace',
  'schema',
  'type',
  'index',
  'custom',
  'or',
  'function',
  'aggregate',
  'materialized',
  'trigger',
  'role',
  'user',
];

/** Parses CQL text; the result maps `keyspace.table` to its compression settings. */
export function parseSchema(text: string, file = 'schema'): Map<string, TableSchema> {
  const tables = new Map<string, TableSchema>();
  let keyspace: string | undefined;

  for (const stmt of statements(tokenize(text, file))) {
    const p = new Parser(stmt, file);
    const first = stmt[0];
    if (first.kind !== 'word' || !STATEMENTS.includes(first.text.toLowerCase())) {
      throw new SchemaError(
        file,
        first.line,
        `"${first.text.slice(0, 40)}" does not start a CQL statement` +
          `${didYouMean(
            first.text,
            STATEMENTS.map((w) => w.toUpperCase()),
          )}`,
      );
    }
    if (p.isWord('use')) {
      p.at++;
      keyspace = p.name();
      continue;
    }
    if (
      (p.isWord('create') || p.isWord('alter')) &&
      !SCHEMA_OBJECTS.includes(stmt[1]?.text.toLowerCase() ?? '')
    ) {
      throw new SchemaError(
        file,
        first.line,
        `${first.text.toUpperCase()} ${stmt[1]?.text ?? ''} is not a ` +
          `statement this file can ` +
          `hold${didYouMean(stmt[1]?.text ?? '', ['TABLE', 'KEYSPACE', 'TYPE', 'INDEX'])}`,
      );
    }

    const create = p.isWord('create') && (p.isWord('table', 1) || p.isWord('columnfamily', 1));
    const alter = p.isWord('alter') && (p.isWord('table', 1) || p.isWord('columnfamily', 1));
    if (!create && !alter) {
      const mention = stmt.find(
        (tk) => tk.kind === 'word' && tk.text.toLowerCase() === 'compression',
      );
      if (mention && ['create', 'alter'].includes(first.text.toLowerCase())) {
        throw new SchemaError(
          file,
          mention.line,
          `compression is a table option, but this is ${first.text.toUpperCase()} ` +
            `${stmt[1]?.text.toUpperCase() ?? ''}: write ALTER TABLE KEYSPACE.TABLE WITH ` +
            `compression = {...}`,
        );
      }
      continue;
    }
    p.at += 2;
    if (create && p.isWord('if')) {
      p.at++;
      if (!p.isWord('not')) p.fail('expected IF NOT EXISTS');
      p.at++;
      if (!p.isWord('exists')) p.fail('expected IF NOT EXISTS');
      p.at++;
    }
    if (alter && p.isWord('if') && p.isWord('exists', 1)) p.at += 2;

    const name = p.qualifiedName(keyspace);
    const key = `${name.keyspace}.${name.table}`;
    if (create) {
      if (!(p.peek()?.kind === 'punct' && p.peek()?.text === '('))
        p.fail('expected the column list');
      p.skipBalanced();
      const opts = p.withOptions();
      if (p.peek()) p.fail('expected WITH or the end of the statement');
      tables.set(key, {
        keyspace: name.keyspace,
        table: name.table,
        compression: opts?.compression,
        source: `${file}:${opts?.line ?? name.line}`,
      });
      continue;
    }

    // ALTER TABLE: only a WITH clause matters here (ADD, DROP, RENAME change no compression).
    const rest = stmt.slice(p.at);
    const withAt = rest.findIndex((tk) => tk.kind === 'word' && tk.text.toLowerCase() === 'with');
    const compressionAt = rest.findIndex(
      (tk) => tk.kind === 'word' && nearest(tk.text, ['compression']) !== undefined,
    );
    if (compressionAt >= 0 && (withAt < 0 || withAt > compressionAt)) {
      throw new SchemaError(
        file,
        rest[compressionAt].line,
        `expected WITH before "${rest[compressionAt].text}": ` +
          `ALTER TABLE ${name.keyspace}.${name.table} WITH compression = {...}`,
      );
    }
    while (p.peek() && !p.isWord('with')) p.skipBalanced();
    const opts = p.withOptions();
    if (opts?.compression) {
      tables.set(key, {
        keyspace: name.keyspace,
        table: name.table,
        compression: opts.compression,
        source: `${file}:${opts.line}`,
      });
    }
  }
  return tables;
}

export function loadSchema(file: string): Map<string, TableSchema> {
  // A DESC SCHEMA dump of a large cluster is a few MiB.
  const text = readRegularFile(file, 256 * 1024 * 1024, 'ERR_TDE_SCHEMA', 'schema file').toString(
    'utf8',
  );
  if (text.includes('\0')) {
    throw new TdeError('ERR_TDE_SCHEMA', `${file} is not a text file of CQL statements`, { file });
  }
  const tables = parseSchema(text, file);
  if (tables.size === 0) {
    throw new TdeError(
      'ERR_TDE_SCHEMA',
      `${file} names no table: it needs CREATE TABLE or ALTER TABLE ` +
        '... WITH compression = {...} statements',
      { file },
    );
  }
  return tables;
}
