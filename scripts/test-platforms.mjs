// `npm run test:platforms`: builds every platform package (scripts/build-all.mjs) whose
// binary is missing or older than the sources, gets a Node of each Linux platform's own
// libc and architecture (scripts/foreign-runtimes.mjs: arm64 under qemu-user, musl from
// Debian trixie, all cached), installs the packed packages into a fresh project
// (scripts/packed-project.mjs), then runs __test__/platforms with vitest and prints one
// summary line.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PLATFORMS } from './build-all.mjs';
import { nodeRuntimes } from './foreign-runtimes.mjs';
import { buildStale, installPacked } from './packed-project.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const started = Date.now();
const work = mkdtempSync(join(tmpdir(), 'tmcp-platforms-'));
let passed = 0;
let failed = 0;
try {
	const platforms = Object.keys(PLATFORMS);
	buildStale(platforms);
	const runtimes = nodeRuntimes();
	const project = installPacked(join(work, 'project'), { platforms });
	copyFileSync(join(root, '__test__', 'platforms', 'roundtrip.mjs'), join(project, 'roundtrip.mjs'));
	const config = join(work, 'config.json');
	writeFileSync(config, JSON.stringify({ project, runtimes }, null, 2));

	const json = join(work, 'results.json');
	const vitest = spawnSync(
		'npx',
		['vitest', 'run', '--config', 'vitest.platforms.config.mjs', '--reporter=default', '--reporter=json', `--outputFile.json=${json}`],
		{ cwd: root, stdio: 'inherit', env: { ...process.env, TMCP_PLATFORMS_CONFIG: config } },
	);
	try {
		const results = JSON.parse(readFileSync(json, 'utf8'));
		passed = results.numPassedTests;
		failed = results.numFailedTests + results.testResults.filter((f) => f.status === 'failed' && !f.assertionResults.some((t) => t.status === 'failed')).length;
	} catch {
		failed = 1;
	}
	if (vitest.status !== 0 && failed === 0) failed = 1;
} catch (error) {
	console.error(`test:platforms: ${error.message}`);
	failed += 1;
} finally {
	rmSync(work, { recursive: true, force: true });
}
console.log(`test:platforms took ${((Date.now() - started) / 1000).toFixed(0)} s`);
console.log(`platforms: ${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
