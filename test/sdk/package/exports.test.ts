/**
 * Every type a public signature names is importable: walking the packed package's .d.ts files from its
 * `exports` entry, each type reference that resolves to a declaration inside the package must be exported
 * from the entry (else a consumer cannot write the type of what it passes or gets back).
 */
import { readFileSync } from "node:fs";
import { join, relative } from "node:path";
import ts from "typescript";
import { beforeAll, describe, expect, it } from "vitest";
import { CONSUMER_OPTIONS, consumerProject } from "./consumer.js";

interface Walk {
  checker: ts.TypeChecker;
  pkg: string;
  exported: Set<ts.Symbol>;
  seen: Set<ts.Symbol>;
  missing: Map<string, string>;
}

/** The `types` file the package's `exports["."]` names. */
function entryOf(pkg: string): string {
  const manifest = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8"));
  return join(pkg, manifest.exports["."].types);
}

function resolved(checker: ts.TypeChecker, symbol: ts.Symbol): ts.Symbol {
  return symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol;
}

function inPackage(walk: Walk, symbol: ts.Symbol): boolean {
  const decls = symbol.declarations ?? [];
  return (
    decls.length > 0 && decls.every((d) => !relative(walk.pkg, d.getSourceFile().fileName).startsWith(".."))
  );
}

/** Private members, and members documented `@internal` (constructors of handles), are not public signatures. */
function hidden(node: ts.Node): boolean {
  const modifiers = ts.canHaveModifiers(node) ? ts.getModifiers(node) : undefined;
  return (
    ts.getJSDocTags(node).some((t) => t.tagName.text === "internal") ||
    !!modifiers?.some((m) => m.kind === ts.SyntaxKind.PrivateKeyword) ||
    ((ts.isPropertyDeclaration(node) || ts.isMethodDeclaration(node)) && ts.isPrivateIdentifier(node.name))
  );
}

/** The name a type reference or `extends X<...>` clause uses, if `node` is one. */
function referencedName(node: ts.Node): ts.Node | undefined {
  if (ts.isTypeReferenceNode(node)) return node.typeName;
  if (ts.isExpressionWithTypeArguments(node)) return node.expression;
  return undefined;
}

/** Record and follow every package type that `node` (a declaration of `owner`) references. */
function visit(walk: Walk, node: ts.Node, owner: string): void {
  if (hidden(node)) return;
  const name = referencedName(node);
  const at = name && walk.checker.getSymbolAtLocation(name);
  if (at) {
    const symbol = resolved(walk.checker, at);
    if (!(symbol.flags & ts.SymbolFlags.TypeParameter) && inPackage(walk, symbol)) {
      if (!walk.exported.has(symbol) && !walk.missing.has(symbol.name))
        walk.missing.set(symbol.name, `${symbol.name} (in the signature of ${owner})`);
      follow(walk, symbol);
    }
  }
  ts.forEachChild(node, (child) => visit(walk, child, owner));
}

function follow(walk: Walk, symbol: ts.Symbol): void {
  if (walk.seen.has(symbol)) return;
  walk.seen.add(symbol);
  for (const decl of symbol.declarations ?? []) visit(walk, decl, symbol.name);
}

/** Names referenced from the entry's exported declarations (transitively) that the entry does not export. */
function unexportedReferences(pkg: string): string[] {
  const entry = entryOf(pkg);
  const options = ts.convertCompilerOptionsFromJson(CONSUMER_OPTIONS, pkg).options;
  const program = ts.createProgram([entry], options);
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(entry);
  const module = source && checker.getSymbolAtLocation(source);
  if (!module) throw new Error(`${entry}: not a module`);
  const exports = checker.getExportsOfModule(module).map((s) => resolved(checker, s));
  const walk: Walk = { checker, pkg, exported: new Set(exports), seen: new Set(), missing: new Map() };
  for (const symbol of exports) follow(walk, symbol);
  return [...walk.missing.values()].sort();
}

describe("public types of the packed package", () => {
  let pkg = "";
  beforeAll(() => {
    pkg = join(consumerProject(), "node_modules", "oplora");
  });

  it("exports every package type its exported signatures reference", () => {
    const missing = unexportedReferences(pkg);
    expect(missing, `referenced but not exported from the entry:\n${missing.join("\n")}`).toEqual([]);
  });
});
