/**
 * A consumer project around the packed package: `npm pack` of this checkout (the build in dist/ must be
 * current), unpacked into `<tmp>/node_modules/oplora` the way `npm install oplora-*.tgz` lays it out, its
 * runtime dependencies (and @types/node) linked from this checkout's node_modules (an offline install
 * cannot fetch them), and a strict tsconfig. No install script runs: no Python set-up happens.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ts from "typescript";
import { REPO } from "../helpers.js";

/** What a consumer is most likely to turn on, and what the README promises to compile under. */
export const CONSUMER_OPTIONS = {
  target: "ES2022",
  module: "NodeNext",
  moduleResolution: "NodeNext",
  lib: ["ES2023"],
  types: ["node"],
  strict: true,
  exactOptionalPropertyTypes: true,
  noUncheckedIndexedAccess: true,
  noEmit: true,
  skipLibCheck: false,
} as const;

/** Pack this checkout and lay the tarball out as an installed dependency; returns the project folder. */
export function consumerProject(): string {
  if (!existsSync(join(REPO, "dist", "sdk", "index.d.ts")))
    throw new Error("dist/sdk/index.d.ts is missing: run `npm run build` first");
  const dir = mkdtempSync(join(tmpdir(), "oplora-consumer-"));
  // --ignore-scripts: `prepare` would rebuild dist (the caller built it); the tarball is what npm publishes.
  const out = execFileSync("npm", ["pack", "--ignore-scripts", "--silent", "--pack-destination", dir], {
    cwd: REPO,
    encoding: "utf8",
  });
  const tarball = join(dir, out.trim().split("\n").at(-1) as string);
  const pkg = join(dir, "node_modules", "oplora");
  mkdirSync(pkg, { recursive: true });
  execFileSync("tar", ["-xzf", tarball, "-C", pkg, "--strip-components=1"]);
  for (const dep of ["zod", "execa", "pythonia", "@types"])
    symlinkSync(join(REPO, "node_modules", dep), join(dir, "node_modules", dep), "dir");
  writeFileSync(
    join(dir, "package.json"),
    JSON.stringify({
      name: "consumer",
      private: true,
      type: "module",
      dependencies: { oplora: `file:${tarball}` },
    }),
  );
  writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({ compilerOptions: CONSUMER_OPTIONS }));
  return dir;
}

/** Type-check `files` (absolute paths) in the consumer project; one `file(line,col): message` per error. */
export function typeCheck(dir: string, files: string[]): ts.Diagnostic[] {
  const parsed = ts.convertCompilerOptionsFromJson(CONSUMER_OPTIONS, dir);
  if (parsed.errors.length) throw new Error(ts.formatDiagnostics(parsed.errors, host(dir)));
  const program = ts.createProgram(files, parsed.options);
  return [...ts.getPreEmitDiagnostics(program)];
}

export function formatDiagnostic(d: ts.Diagnostic): string {
  const text = ts.flattenDiagnosticMessageText(d.messageText, "\n");
  if (!d.file || d.start === undefined) return text;
  const { line, character } = d.file.getLineAndCharacterOfPosition(d.start);
  return `${d.file.fileName}(${line + 1},${character + 1}): TS${d.code} ${text}`;
}

function host(dir: string): ts.FormatDiagnosticsHost {
  return { getCanonicalFileName: (f) => f, getCurrentDirectory: () => dir, getNewLine: () => "\n" };
}
