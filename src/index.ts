/**
 * sstable-tde: transparent data encryption for Cassandra-format SSTables, DSE-compatible.
 *
 * The library is quiet: it reports through return values, events and typed errors
 * ({@link TdeError}, with stable `code`s), and never writes to the console.
 */
export { ChunkCipher, createChunkCipher } from './cipher/chunk-cipher';
export type { ChunkCipherOptions, ChunkSpans } from './cipher/chunk-cipher';
export {
  parseTransformation,
  resolveCipher,
  supportedTransformations,
} from './cipher/transformation';
export type { CipherChoice, Transformation } from './cipher/transformation';

export { compressorForTable, createCompressor } from './compression/compressor';
export type { Compressor, CreateCompressorOptions } from './compression/compressor';
export { parseTableCompression, COMPRESSOR_CLASSES } from './compression/options';
export type { CompressionParams, EncryptionSettings, CompressorClass } from './compression/options';

export { configFromObject, readConfig } from './config/config';
export type { TdeConfig, SystemInfoEncryption } from './config/config';
export { loadConfig, watchConfig, encryptValue, decryptValue } from './config/secure-values';
export type { LoadedConfig, LoadConfigOptions } from './config/secure-values';

export { createKeyFile, parseKeyFile, readKeyFile } from './keys/key-file';
export { keyCheckValue } from './keys/key-check';
export { KeyProviders, LocalFileSystemKeyProvider } from './keys/provider';
export type { KeyProvider, ResolvedKey } from './keys/provider';

export { parseCompressionInfo, serializeCompressionInfo } from './sstable/compression-info';
export type { CompressionInfo } from './sstable/compression-info';
export { parseComponentName, scanTableDirectory } from './sstable/descriptor';
export type { SSTableFiles, SSTableId } from './sstable/descriptor';
export { findTables, liveSSTables } from './sstable/data-dir';
export { componentPath } from './sstable/descriptor';
export { inspectSSTable } from './sstable/inspect';
export { SSTableReader } from './sstable/reader';
export type { Fault, OpenOptions, VerifyReport } from './sstable/reader';
export { SSTableDataWriter } from './sstable/writer';
export type { DataWriterOptions, WriteResult } from './sstable/writer';

export { parseSchema, loadSchema } from './schema/cql';
export type { TableSchema } from './schema/cql';
export { upgradeSSTables } from './rewrite/upgrade';
export type { SSTableResult, UpgradeEvent, UpgradeOptions, UpgradeReport } from './rewrite/upgrade';
export { verifyDataDirectory } from './tools/verify';
export { describeDataDirectory } from './tools/describe';
export { openDataDirectory } from './tools/open-data-dir';
export type {
  DiskFailurePolicy,
  OpenedDataDirectory,
  OpenDataDirectoryOptions,
} from './tools/open-data-dir';
export { EncryptedComponent, PlainComponent, SENSITIVE_COMPONENTS } from './sstable/page-file';
export { readSegment, SegmentWriter } from './commitlog/segment';
export { HintsWriter, readHintsFile, hintsFileNames } from './commitlog/hints';
export { openCommitLogSegment, openHintsFile, systemInfoKey } from './commitlog/system';
export { readJceksSecretKey } from './config/jceks';

import * as ttlvCodec from './kmip/ttlv/codec';
/**
 * KMIP's TTLV encoding: `ttlv.decode(bytes)` gives a tree with KMIP names, `ttlv.encode(tree)`
 * bytes.
 */
export const ttlv = { decode: ttlvCodec.decode, encode: ttlvCodec.encode };
export type { TtlvItem, TtlvType } from './kmip/ttlv/codec';
export { KmipClient } from './kmip/client';
export type { KmipGroup } from './kmip/client';

export { openPlugin, TdePlugin, DEFAULT_KEY_STATE_POLL_MILLIS } from './plugin/plugin';
export type {
  CompressorForOptions,
  CreateWriterOptions,
  OnKeyRevoked,
  PluginOptions,
  RotatedKey,
} from './plugin/plugin';
export { PluginHintsWriter, PluginSegmentWriter, PluginSSTableWriter } from './plugin/writers';
export type { SSTableWriterOptions } from './plugin/writers';
export { STOPPED_STATES } from './plugin/key-state';
export { formatMetrics, LATENCY_BUCKETS_MS, TdeMetrics } from './metrics/metrics';
export type { CipherCounts, LatencySummary, MetricsSnapshot, TdeEvents } from './metrics/metrics';
export type * from './metrics/observer';
export type { HintsFileNames } from './commitlog/hints';

export { ErrorCode, TdeError, isTdeError } from './errors';
export type { ErrorCodeName, ErrorContext } from './errors';
