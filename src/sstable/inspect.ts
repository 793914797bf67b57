/**
 * What an SSTable is, read from its metadata alone (no key needed): format, compression class and
 * options, chunking and sizes. Used to plan rewrites and by `describe`.
 */
import * as fs from 'node:fs';

import { CompressionParams, paramsFromCompressionInfo } from '../compression/options';
import { fromSystem, isTdeError, TdeError } from '../errors';
import { CompressionInfo, parseCompressionInfo } from './compression-info';
import { checkComponents } from './components';
import { parseCrcDb } from './crc-db';
import { componentPath, displayName, featuresOf, SSTableFiles } from './descriptor';

export interface SSTableSummary {
  sstable: string;
  files: SSTableFiles;
  params: CompressionParams;
  /** CompressionInfo.db's contents, for compressed tables. */
  compressionInfo?: CompressionInfo;
  chunkLength: number;
  chunkCount: number;
  dataLength: number;
  storedLength: number;
  /** The digest component present, if any. */
  digestComponent?: string;
}

export function inspectSSTable(files: SSTableFiles): SSTableSummary {
  const features = featuresOf(files);
  checkComponents(files);
  const dataFile = componentPath(files, 'Data.db');
  if (!files.components.includes('Data.db')) {
    throw new TdeError(
      'ERR_TDE_MISSING_COMPONENT',
      `SSTable ${displayName(files)} has no Data.db ` +
        `(found ${files.components.join(', ')}); it is incomplete`,
      { file: dataFile },
    );
  }
  let storedLength: number;
  try {
    storedLength = fs.statSync(dataFile).size;
  } catch (err) {
    throw fromSystem(err, dataFile, 'stat');
  }
  const digestComponent = files.components.find((c) => c.startsWith('Digest.'));
  const base = { sstable: displayName(files), files, storedLength, digestComponent };

  if (files.components.includes('CompressionInfo.db')) {
    const file = componentPath(files, 'CompressionInfo.db');
    let raw: Buffer;
    try {
      raw = fs.readFileSync(file);
    } catch (err) {
      throw fromSystem(err, file, 'read');
    }
    const info = parseCompressionInfo(raw, file, features.hasMaxCompressedLength);
    let params: CompressionParams;
    try {
      params = paramsFromCompressionInfo(
        info.className,
        info.options,
        info.chunkLength,
        info.maxCompressedLength,
      );
    } catch (err) {
      if (isTdeError(err)) throw new TdeError(err.code, `${file}: ${err.message}`, { file }, err);
      throw err;
    }
    return {
      ...base,
      params,
      compressionInfo: info,
      chunkLength: info.chunkLength,
      chunkCount: info.chunkOffsets.length,
      dataLength: info.dataLength,
    };
  }

  if (files.components.includes('CRC.db')) {
    const file = componentPath(files, 'CRC.db');
    let raw: Buffer;
    try {
      raw = fs.readFileSync(file);
    } catch (err) {
      throw fromSystem(err, file, 'read');
    }
    const crc = parseCrcDb(raw, file, storedLength);
    return {
      ...base,
      params: { enabled: false, chunkLength: crc.chunkLength, codecOptions: {} },
      chunkLength: crc.chunkLength,
      chunkCount: crc.checksums.length,
      dataLength: storedLength,
    };
  }
  throw new TdeError(
    'ERR_TDE_MISSING_COMPONENT',
    `SSTable ${displayName(files)} has neither ` +
      'CompressionInfo.db nor CRC.db; restore the missing component from a backup',
    { file: dataFile },
  );
}
