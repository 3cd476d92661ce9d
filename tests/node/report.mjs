// Reads vitest's JSON report and the expected-failures list; prints every
// result, then "N passed, M failed"; exits 1 on an unexpected outcome.
import { readFileSync } from "node:fs";

const [reportPath, expectedPath] = process.argv.slice(2);
const report = JSON.parse(readFileSync(reportPath, "utf8"));
const expected = new Set(
  readFileSync(expectedPath, "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#")),
);
let passed = 0;
let failed = 0;
const seen = new Set();
for (const file of report.testResults) {
  for (const t of file.assertionResults) {
    const name = t.fullName;
    seen.add(name);
    const ok = t.status === "passed";
    if (expected.has(name)) {
      if (ok) {
        console.log(`UNEXPECTED PASS ${name} (remove it from expected-failures.txt)`);
        failed++;
      } else {
        console.log(`expected failure ${name}`);
        passed++;
      }
    } else if (ok) {
      console.log(`ok ${name}`);
      passed++;
    } else {
      console.log(`FAIL ${name}`);
      for (const m of t.failureMessages ?? []) console.log(`    ${m.split("\n")[0]}`);
      failed++;
    }
  }
  if (file.status === "failed" && file.assertionResults.length === 0) {
    console.log(`FAIL ${file.name}: ${file.message}`);
    failed++;
  }
}
for (const name of expected) {
  if (!seen.has(name)) {
    console.log(`FAIL expected-failure entry matches no test: ${name}`);
    failed++;
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
