// Parse PromQL expressions with the Prometheus project's own lezer grammar (@prometheus-io/lezer-promql).
//
// usage: node promql_check.mjs NPM_PREFIX < expressions.json
//   NPM_PREFIX: the folder whose node_modules holds @prometheus-io/lezer-promql
//   stdin: a JSON array of strings; stdout: a JSON array, one object per expression:
//   {"ok": bool, "errors": n, "error": {"from", "to", "near"} | null, "tree": "<lezer tree>"}
// A syntax error is any node whose type is an error node (lezer's error recovery inserts one
// wherever it had to skip or invent input); "error" is the first one in document order.
// One addition: the grammar's StringLiteral token makes the closing quote optional (its own
// TODO says the token is JavaScript's), so a string left open at the end of the input parses;
// Prometheus's lexer rejects it ("unterminated quoted string"), and so does this script.
import { createRequire } from "node:module";
import { join } from "node:path";
import { readFileSync } from "node:fs";

const prefix = process.argv[2];
if (!prefix) {
  process.stderr.write("usage: node promql_check.mjs NPM_PREFIX < expressions.json\n");
  process.exit(2);
}
const require = createRequire(join(prefix, "package.json"));
const { parser } = require("@prometheus-io/lezer-promql");
const manifest = join(prefix, "node_modules", "@prometheus-io", "lezer-promql", "package.json");
const { version } = JSON.parse(readFileSync(manifest, "utf8"));

// Whether a StringLiteral's text closes with its opening quote (escapes skipped; none in `raw`).
function terminated(text) {
  const quote = text[0];
  for (let i = 1; i < text.length; i += 1) {
    if (text[i] === "\\" && quote !== "`") {
      i += 1;
    } else if (text[i] === quote) {
      return i === text.length - 1;
    }
  }
  return false;
}

function check(expr) {
  const tree = parser.parse(expr);
  let first = null;
  let errors = 0;
  tree.iterate({
    enter(node) {
      const bad =
        node.type.isError ||
        (node.name === "StringLiteral" && !terminated(expr.slice(node.from, node.to)));
      if (bad) {
        errors += 1;
        if (first === null) {
          first = { from: node.from, to: node.to, near: expr.slice(node.from, node.from + 20) };
        }
      }
    },
  });
  const topOk = tree.type.name === "PromQL" && tree.length === expr.length;
  if (!topOk && first === null) {
    first = { from: 0, to: expr.length, near: `unexpected top node ${tree.type.name}` };
    errors += 1;
  }
  return { ok: errors === 0, errors, error: first, tree: tree.toString() };
}

const expressions = JSON.parse(readFileSync(0, "utf8"));
if (!Array.isArray(expressions) || !expressions.every((e) => typeof e === "string")) {
  process.stderr.write("stdin must be a JSON array of strings\n");
  process.exit(2);
}
process.stdout.write(JSON.stringify({ version, results: expressions.map(check) }));
