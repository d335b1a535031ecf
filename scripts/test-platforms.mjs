// `npm run test:platforms`: builds every platform package (scripts/build-all.mjs) when its
// binary is missing or older than the sources, gets what the checks need (qemu-user and
// Debian's arm64 Node with its libraries, unpacked under target/arm64-sysroot), then runs
// __test__/platforms with vitest and prints one summary line.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sourcesChangedAt } from './sources.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const PLATFORMS = ['linux-x64-gnu', 'linux-arm64-gnu', 'linux-x64-musl', 'linux-arm64-musl'];
const SYSROOT = join(root, 'target', 'arm64-sysroot');
/** Debian's nodejs for arm64 and what it loads (libraries and its externalized builtins). */
const ARM64_PACKAGES = [
	'nodejs:arm64', 'libnode108:arm64', 'libc6:arm64', 'libgcc-s1:arm64', 'libstdc++6:arm64',
	'libbrotli1:arm64', 'libc-ares2:arm64', 'libicu72:arm64', 'libnghttp2-14:arm64', 'libssl3:arm64',
	'libuv1:arm64', 'zlib1g:arm64', 'node-acorn', 'node-cjs-module-lexer', 'node-undici',
];

function run(cmd, args, opts = {}) {
	const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });
	if (r.status !== 0) {
		console.error(`test:platforms: \`${cmd} ${args.join(' ')}\` failed (${r.status ?? r.signal})`);
		process.exit(1);
	}
}
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const apt = (args) => run('apt-get', args, { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });

// 1. Binaries and tarballs.
const sources = sourcesChangedAt();
const stale = PLATFORMS.filter((p) => {
	const file = join(root, 'npm', p, `session-manager-redis.${p}.node`);
	const tarball = join(root, 'dist', `tmcp-rs-session-manager-redis-${p}-0.1.0.tgz`);
	return !existsSync(file) || statSync(file).mtimeMs < sources || !existsSync(tarball);
});
if (stale.length) run(process.execPath, [join(root, 'scripts', 'build-all.mjs'), ...stale]);

// 2. qemu-user and an arm64 Node.
const needQemu = !has('qemu-aarch64');
const needNode = !existsSync(join(SYSROOT, 'usr', 'bin', 'nodejs'));
if (needQemu || needNode) {
	if (needNode) {
		const arches = spawnSync('dpkg', ['--print-foreign-architectures'], { encoding: 'utf8' }).stdout;
		if (!arches.split('\n').includes('arm64')) run('dpkg', ['--add-architecture', 'arm64']);
	}
	apt(['update', '-q']);
	if (needQemu) apt(['install', '-y', '-q', 'qemu-user']);
	if (needNode) {
		const dir = mkdtempSync(join(tmpdir(), 'arm64-debs-'));
		spawnSync('chmod', ['777', dir]);
		run('apt-get', ['download', '-q', ...ARM64_PACKAGES], { cwd: dir });
		mkdirSync(SYSROOT, { recursive: true });
		for (const deb of readdirSync(dir).filter((f) => f.endsWith('.deb'))) run('dpkg', ['-x', join(dir, deb), SYSROOT]);
		rmSync(dir, { recursive: true, force: true });
	}
}

// 3. The checks.
const out = mkdtempSync(join(tmpdir(), 'vitest-platforms-'));
const json = join(out, 'results.json');
const vitest = spawnSync(
	'npx',
	['vitest', 'run', '--config', 'vitest.platforms.config.mjs', '--reporter=default', '--reporter=json', `--outputFile.json=${json}`],
	{ cwd: root, stdio: 'inherit' },
);
let passed = 0;
let failed = 0;
try {
	const results = JSON.parse(readFileSync(json, 'utf8'));
	passed = results.numPassedTests;
	failed = results.numFailedTests + results.testResults.filter((f) => f.status === 'failed' && !f.assertionResults.some((t) => t.status === 'failed')).length;
} catch {
	failed = 1;
}
if (vitest.status !== 0 && failed === 0) failed = 1;
rmSync(out, { recursive: true, force: true });
console.log(`platforms: ${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
