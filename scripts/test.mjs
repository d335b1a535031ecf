// The test command: Rust unit tests, then the vitest suite against real redis-server
// processes; ends with one plain summary line over both.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

const cargo = spawnSync('cargo', ['test', '--quiet'], { cwd: root, encoding: 'utf8' });
process.stdout.write(cargo.stdout);
process.stderr.write(cargo.stderr);
let passed = 0;
let failed = 0;
for (const m of cargo.stdout.matchAll(/test result: \w+\. (\d+) passed; (\d+) failed/g)) {
	passed += Number(m[1]);
	failed += Number(m[2]);
}
if (cargo.status !== 0 && failed === 0) failed = 1;
console.log(`cargo: ${passed} passed, ${failed} failed`);

const out = mkdtempSync(join(tmpdir(), 'vitest-json-'));
const json = join(out, 'results.json');
const args = ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${json}`];
if (process.env.REDIS_URL) args.push('--no-file-parallelism');
const vitest = spawnSync('npx', args, { cwd: root, stdio: 'inherit' });
let vPassed = 0;
let vFailed = 0;
try {
	const results = JSON.parse(readFileSync(json, 'utf8'));
	vPassed = results.numPassedTests;
	// Failed tests, plus files that failed without a failing test (e.g. a setup error).
	const brokenFiles = results.testResults.filter(
		(file) => file.status === 'failed' && !file.assertionResults.some((t) => t.status === 'failed'),
	).length;
	vFailed = results.numFailedTests + brokenFiles;
} catch {
	vFailed = 1;
}
if (vitest.status !== 0 && vFailed === 0) vFailed = 1;
rmSync(out, { recursive: true, force: true });
console.log(`vitest: ${vPassed} passed, ${vFailed} failed`);
console.log(`summary: ${passed + vPassed} passed, ${failed + vFailed} failed`);
process.exit(failed + vFailed > 0 ? 1 : 0);
