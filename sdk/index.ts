/** oplora's public surface: only re-exports. */
export { type AdapterInfo, readAdapter } from "./adapter.js";
export { closePython } from "./bridge/quick.js";
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
export { type MetricsOf, TASK_METRICS } from "./metrics.js";
export { listTargetModules, type Plan, plan, type TargetModules } from "./plan.js";
export { type Report, type ReportOptions, writeReport } from "./report/index.js";
export { type Artifact, RunResult, type RunResultOf, RunStatus, type SucceededResultOf } from "./result.js";
export { RunHandle, type RunOptions, run } from "./run.js";
export { readEvents, readResult } from "./run-dir.js";
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
export {
  type Axes,
  type Confirmation,
  expandSweep,
  RayBackend,
  RayBackendError,
  type RayDoctorReport,
  rayDoctor,
  readManifest,
  SearchBlock,
  type SearchBlockInput,
  type SearchResults,
  type SearchTrial,
  STUDIES,
  type StudyResult,
  SweepBackend,
  type SweepEvent,
  SweepHandle,
  SweepInvalidError,
  SweepLockedError,
  type SweepOptions,
  type SweepPlan,
  type SweepResults,
  sweep,
  type TrialRow,
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
