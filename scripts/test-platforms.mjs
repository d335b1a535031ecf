// `npm run test:platforms`: builds every platform package (scripts/build-all.mjs) whose
// binary is missing or older than the sources, gets a Node of each Linux platform's own
// libc and architecture (scripts/foreign-runtimes.mjs: arm64 under qemu-user, musl from
// Debian trixie, all cached), installs the packed packages into a fresh project
// (scripts/packed-project.mjs), then runs __test__/platforms with vitest and prints one
// summary line.
import { mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runVitest } from './vitest-run.mjs';
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

	({ passed, failed } = runVitest(['--config', 'vitest.platforms.config.mjs'], {
		cwd: root,
		env: { ...process.env, TMCP_PLATFORMS_CONFIG: config },
	}));
} catch (error) {
	console.error(`test:platforms: ${error.message}`);
	failed += 1;
} finally {
	rmSync(work, { recursive: true, force: true });
}
console.log(`test:platforms took ${((Date.now() - started) / 1000).toFixed(0)} s`);
console.log(`platforms: ${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
