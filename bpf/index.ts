/** Public surface of the BPF datapath library: what the agent and the proxy import. */
export * from './codecs.generated.ts';
export { type Codec, addressToBytes, bytesToAddress } from './codec.ts';
export { possibleCpus } from './cpus.ts';
export { CGROUP_PROGRAMS, COUNTER_MAPS, DATAPATH_OBJECTS, DEFAULT_OBJECT_DIR, DEFAULT_PIN_ROOT, Datapath, type AttachmentReport, type DatapathOptions, PinnedMaps, SOCKMAP_PROGRAMS, nodePinDir, replaceCounterMaps } from './datapath.ts';
export { BpfAttachError, BpfCodecError, BpfError, type BpfErrorCode, BpfLoadError, BpfMapError, describeErrno } from './errors.ts';
export { FakeMap, FakeMapSet, createFakeMap } from './fake-map.ts';
export {
  type BackendSpec,
  type DatapathConfig,
  type FrontendKind,
  type FrontendSpec,
  type L4Proto,
  MAX_SERVICE_ID,
  type ServiceCounters,
  type ServiceEntries,
  type ServiceSpec,
  lookupOriginalDst,
  planServiceEntries,
  readDatapathCounters,
  readServiceCounters,
  registerProxyListener,
  removeServiceEntries,
  writeDatapathConfig,
  writeServiceEntries,
  writeServicesBulk,
  zeroServiceCounters,
} from './lb-tables.ts';
export { getNetnsCookie } from './libbpf.ts';
export { attachTc, detachTc, queryCgroupPrograms, queryTc, type TcAttachment, type TcDirection } from './link.ts';
export { type BpfLogger, silentLogger } from './logger.ts';
export { BpfMap, openPinnedMap } from './map.ts';
export type { MapKey, MapLike, MapSet, MapValue, UpdateMode } from './map-like.ts';
export type { MapSpec, MapTypeName } from './map-spec.ts';
export { BpfObject, type BpfProgram, type IncompatibleMapPolicy, type OpenObjectOptions } from './object.ts';
