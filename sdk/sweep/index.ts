/** Sweeps: expansion and validation, the run store, warm workers, the scheduler, built-in studies. */
export { canonicalJson, specHash } from "./canonical.js";
export { SweepInvalidError, SweepLockedError, WorkerCrashedError } from "./errors.js";
export {
  type Axes,
  type DottedPath,
  expandSweep,
  type PathValue,
  type SpecPath,
  type SweepPlan,
  type Trial,
} from "./expand.js";
export type { Mode } from "./lanes.js";
export {
  RayBackend,
  RayBackendError,
  type RayDoctorNode,
  type RayDoctorReport,
  type RayNode,
  rayDoctor,
  SweepBackend,
} from "./ray.js";
export {
  type Confirmation,
  SEARCH_DB,
  type SearchResults,
  type SearchTrial,
  type SearchTrialState,
  type StudyResult,
} from "./search.js";
export { SearchBlock, type SearchBlockInput, SearchParam } from "./search-block.js";
export { type ManifestTrial, readManifest, type SweepManifest, type TrialStatus } from "./store.js";
export { STUDIES, type Study } from "./studies.js";
export {
  type SweepEvent,
  SweepHandle,
  type SweepOptions,
  type SweepResults,
  sweep,
  type TrialInfo,
  type TrialRow,
} from "./sweep.js";
