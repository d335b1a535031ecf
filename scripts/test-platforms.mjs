// `npm run test:platforms`: builds every platform package (scripts/build-all.mjs) whose
// binary is missing or older than the sources, gets a Node of each Linux platform's own
// libc and architecture (scripts/foreign-runtimes.mjs: arm64 under qemu-user, musl from
// Debian trixie, all cached), installs the packed packages into a fresh project
// (scripts/packed-project.mjs), then runs __test__/platforms with vitest and prints one
// summary line.
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runPreparedSuite } from './vitest-run.mjs';
import { PLATFORMS } from './build-all.mjs';
import { nodeRuntimes } from './foreign-runtimes.mjs';
import { buildStale, installPacked } from './packed-project.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
runPreparedSuite({
	name: 'platforms',
	vitestConfig: 'vitest.platforms.config.mjs',
	configEnv: 'TMCP_PLATFORMS_CONFIG',
	cwd: root,
	prepare(work) {
		const platforms = Object.keys(PLATFORMS);
		buildStale(platforms);
		const runtimes = nodeRuntimes();
		const project = installPacked(join(work, 'project'), { platforms });
		copyFileSync(join(root, '__test__', 'platforms', 'roundtrip.mjs'), join(project, 'roundtrip.mjs'));
		return { project, runtimes };
	},
});
