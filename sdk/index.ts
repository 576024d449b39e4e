/** oplora's public surface: only re-exports. */
export { type AdapterInfo, readAdapter } from "./adapter.js";
export type { PythonOptions } from "./bridge/python.js";
export { type CallOptions, closePython } from "./bridge/quick.js";
export { type DoctorReport, doctor } from "./environment.js";
export {
  CancelledError,
  InputError,
  OploraError,
  ProcessCrashedError,
  ProtocolError,
  PythonCallError,
  PythonEnvironmentError,
  type PythonErrorInfo,
  RunLockedError,
  SpecInvalidError,
  TrainingFailedError,
} from "./errors.js";
export { type EventOf, RunEvent, type RunEventType } from "./events.js";
export type { LockHolder } from "./lock.js";
export { KEY_METRICS, type MetricsOf, TASK_METRICS } from "./metrics.js";
export { listTargetModules, type Plan, plan, type TargetModules } from "./plan.js";
export { type MfTable, type Report, type ReportOptions, writeReport } from "./report/index.js";
export {
  type Artifact,
  ArtifactKind,
  RunResult,
  type RunResultBase,
  type RunResultOf,
  RunStatus,
  type SucceededResultOf,
} from "./result.js";
export { RunHandle, type RunOptions, run, type TaskOf } from "./run.js";
export { readEvents, readResult } from "./run-dir.js";
export {
  type ListRunsOptions,
  listRuns,
  RUN_LIST_STATUSES,
  type RunArm,
  type RunArtifact,
  type RunDetails,
  type RunEntry,
  type RunError,
  type RunListStatus,
  type RunSweep,
  showRun,
} from "./runs.js";
export {
  LlavaMetrics,
  LlavaSpec,
  MatrixFactorizationMetrics,
  MatrixFactorizationSpec,
  MatrixFactorizationStudyMetrics,
  MatrixFactorizationStudySpec,
  Spec,
  type SpecInput,
  type SpecInputOf,
  type SpecOf,
  type TaskName,
  TextToImageMetrics,
  TextToImageSpec,
} from "./spec/index.js";
export { specJsonSchema, specJsonSchemaText } from "./spec/schema.js";
export { defineSpec, validateSpec } from "./spec/validate.js";
export { EventStream } from "./stream.js";
export {
  type Axes,
  type Confirmation,
  type DottedPath,
  expandSweep,
  type ManifestTrial,
  type Mode as SweepMode,
  type PathValue,
  RayBackend,
  RayBackendError,
  type RayDoctorNode,
  type RayDoctorReport,
  type RayNode,
  rayDoctor,
  readManifest,
  SearchBlock,
  type SearchBlockInput,
  type SearchResults,
  type SearchTrial,
  type SearchTrialState,
  type SpecPath,
  STUDIES,
  type Study,
  type StudyResult,
  SweepBackend,
  type SweepEvent,
  SweepHandle,
  SweepInvalidError,
  SweepLockedError,
  type SweepManifest,
  type SweepOptions,
  type SweepPlan,
  type SweepResults,
  sweep,
  type Trial,
  type TrialInfo,
  type TrialRow,
  type TrialStatus,
  WorkerCrashedError,
} from "./sweep/index.js";

export {
  type AnswerOptions,
  AnswerResult,
  answer,
  type GenerateOptions,
  GenerateResult,
  generate,
} from "./use.js";

export const VERSION = "0.1.0";
