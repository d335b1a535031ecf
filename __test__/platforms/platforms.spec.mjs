// The prebuilt binaries of every platform package (npm/<platform>), checked on this
// machine: glibc floor, musl linkage, the arm64 binary running under qemu-user in an
// arm64 Node against a real redis-server, the loader's error on a platform without a
// binary, and the packed tarballs. Run by `npm run test:platforms` (slow: it builds
// every platform first), not by `npm test`.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis } from '../helpers/redis.mjs';

const root = fileURLToPath(new URL('../..', import.meta.url));
const binary = (platform) => join(root, 'npm', platform, `session-manager-redis.${platform}.node`);
const GNU = ['linux-x64-gnu', 'linux-arm64-gnu'];
const MUSL = ['linux-x64-musl', 'linux-arm64-musl'];
/** Debian's arm64 Node and its libraries, unpacked by scripts/test-platforms.mjs. */
const ARM64_ROOT = join(root, 'target', 'arm64-sysroot');

/** GLIBC_x.y versions the binary's dynamic symbols require. */
function glibcVersions(file) {
	const out = execFileSync('objdump', ['-T', file], { encoding: 'utf8' });
	return [...new Set(out.match(/GLIBC_[0-9.]+/g) ?? [])];
}

/** Compares "2.17" and "2.34" as versions. */
function newer(a, b) {
	const [x, y] = [a, b].map((v) => v.split('.').map(Number));
	for (let i = 0; i < Math.max(x.length, y.length); i++) {
		if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) > (y[i] ?? 0);
	}
	return false;
}

describe('glibc binaries need no symbol newer than glibc 2.17', () => {
	it.each(GNU)('%s', (platform) => {
		const versions = glibcVersions(binary(platform)).map((v) => v.slice('GLIBC_'.length));
		expect(versions.length).toBeGreaterThan(0);
		const tooNew = versions.filter((v) => newer(v, '2.17'));
		expect(tooNew).toEqual([]);
	});
});

describe('musl binaries link against musl only', () => {
	it.each(MUSL)('%s', (platform) => {
		const file = binary(platform);
		const dynamic = execFileSync('readelf', ['-d', file], { encoding: 'utf8' });
		const needed = [...dynamic.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
		// musl has one C library; glibc's split ones (libc.so.6, libpthread, libdl, libm.so.6,
		// ld-linux) must not appear, nor any glibc symbol version.
		expect(needed.length).toBeGreaterThan(0);
		for (const lib of needed) expect(lib).toMatch(/^(libc\.so|libc\.musl-[a-z0-9_]+\.so\.1|libgcc_s\.so\.1)$/);
		expect(glibcVersions(file)).toEqual([]);
	});
});

describe('linux-arm64-gnu runs in an arm64 Node under qemu-user', () => {
	let server;
	beforeAll(async () => {
		server = await startRedis();
	});
	afterAll(() => server?.stop());

	it('create/send/has/delete and an info round trip against a real redis-server', () => {
		const node = join(ARM64_ROOT, 'usr', 'bin', 'nodejs');
		expect(existsSync(node)).toBe(true);
		const script = fileURLToPath(new URL('./roundtrip.cjs', import.meta.url));
		const run = spawnSync('qemu-aarch64', [node, script, server.url], {
			env: { ...process.env, QEMU_LD_PREFIX: ARM64_ROOT, NAPI_RS_NATIVE_LIBRARY_PATH: binary('linux-arm64-gnu') },
			encoding: 'utf8',
			timeout: 120_000,
		});
		expect(run.stderr).toBe('');
		const report = JSON.parse(run.stdout.trim().split('\n').at(-1));
		expect(report).toEqual({
			arch: 'arm64',
			received: ['hello from arm64'],
			hasBefore: true,
			hasAfter: false,
			closed: true,
			clientInfo: { name: 'arm64', version: '1' },
			logLevel: 'notice',
		});
	});
});

describe('the loader on a platform without a binary', () => {
	it('throws an error naming the platform and the platforms that have one', () => {
		const run = spawnSync(
			process.execPath,
			['-e', "Object.defineProperty(process, 'arch', { value: 'riscv64' }); require(process.argv[1])", join(root, 'index.js')],
			{ encoding: 'utf8' },
		);
		expect(run.status).not.toBe(0);
		expect(run.stderr).toMatch(/no prebuilt binary for this platform \(linux-riscv64-gnu\)/);
		expect(run.stderr).toMatch(/Prebuilt: linux-x64-gnu, linux-arm64-gnu, linux-x64-musl, linux-arm64-musl/);
	});
});

describe('npm pack of each platform package', () => {
	it.each([...GNU, ...MUSL])('%s yields a tarball holding its binary', (platform) => {
		const tarball = join(root, 'dist', `tmcp-rs-session-manager-redis-${platform}-0.1.0.tgz`);
		expect(existsSync(tarball)).toBe(true);
		const files = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).trim().split('\n');
		expect(files).toContain(`package/session-manager-redis.${platform}.node`);
		expect(files).toContain('package/package.json');
	});
});
