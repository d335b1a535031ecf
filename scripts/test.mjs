// The test command: Rust unit tests, then the vitest suite against real redis-server
// processes; ends with one plain summary line over both.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { runVitest } from './vitest-run.mjs';

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

const vitestArgs = process.env.REDIS_URL ? ['--no-file-parallelism'] : [];
const { passed: vPassed, failed: vFailed } = runVitest(vitestArgs, { cwd: root });
console.log(`vitest: ${vPassed} passed, ${vFailed} failed`);
console.log(`summary: ${passed + vPassed} passed, ${failed + vFailed} failed`);
process.exit(failed + vFailed > 0 ? 1 : 0);
