// The prebuilt binaries of every platform package (npm/<platform>), checked on this
// machine. Each Linux binary is installed from its packed tarball and loaded, by the
// package's own loader, in a Node of its own libc and architecture (arm64 under
// qemu-user, musl on Debian trixie's musl 1.2.5), where it passes the round trip against
// a real redis-server. The macOS binaries cannot run here: their Mach-O headers, exports,
// imports and minimum macOS version are checked instead. Run by `npm run test:platforms`
// (scripts/test-platforms.mjs sets up the runtimes and the project; slow: it builds every
// platform first), not by `npm test`.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis } from '../helpers/redis.mjs';
import { BIND, CPU, MH_DYLIB, isMacos, readMachO, tbdExports } from './macho.mjs';
import { MACOS_MIN, PLATFORMS } from '../../scripts/build-all.mjs';
import { roundTripReport } from './expected.mjs';

const root = fileURLToPath(new URL('../..', import.meta.url));
const binary = (platform) => join(root, 'npm', platform, `session-manager-redis.${platform}.node`);
const GNU = ['linux-x64-gnu', 'linux-arm64-gnu'];
const MUSL = ['linux-x64-musl', 'linux-arm64-musl'];
const DARWIN = ['darwin-arm64', 'darwin-x64'];
if (!process.env.TMCP_PLATFORMS_CONFIG) throw new Error('run these through `npm run test:platforms`');
/** @type {{ project: string, runtimes: Record<string, { cmd: string, args: string[], env: Record<string, string>, describe: string, muslLdd?: boolean }> }} */
const config = JSON.parse(readFileSync(process.env.TMCP_PLATFORMS_CONFIG, 'utf8'));

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

/** Runs a command to its end without blocking the event loop (the redis-server lives here). */
function runAsync(cmd, args, options) {
	return new Promise((resolve) => {
		const child = spawn(cmd, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
		let stdout = '';
		let stderr = '';
		child.stdout.on('data', (d) => (stdout += d));
		child.stderr.on('data', (d) => (stderr += d));
		const timer = setTimeout(() => child.kill('SIGKILL'), options.timeout ?? 120_000);
		child.on('close', (status, signal) => {
			clearTimeout(timer);
			resolve({ status, signal, stdout, stderr });
		});
	});
}

describe('glibc binaries need no symbol newer than glibc 2.17', () => {
	it.each(GNU)('%s', (platform) => {
		const versions = glibcVersions(binary(platform)).map((v) => v.slice('GLIBC_'.length));
		expect(versions.length).toBeGreaterThan(0);
		const tooNew = versions.filter((v) => newer(v, '2.17'));
		expect(tooNew).toEqual([]);
	});
});

describe('musl binaries link musl dynamically and can be dlopened', () => {
	it.each(MUSL)('%s', (platform) => {
		const file = binary(platform);
		const dynamic = execFileSync('readelf', ['-dW', file], { encoding: 'utf8' });
		const needed = [...dynamic.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
		// musl has one C library (musl's loader resolves `libc.so` to itself); glibc's split
		// ones (libc.so.6, libpthread, libdl, libm.so.6, ld-linux) must not appear, nor any
		// glibc symbol version.
		expect(needed.length).toBeGreaterThan(0);
		for (const lib of needed) expect(lib).toMatch(/^(libc\.so|libc\.musl-[a-z0-9_]+\.so\.1|libgcc_s\.so\.1)$/);
		expect(glibcVersions(file)).toEqual([]);
		// No copy of musl inside (a static C runtime defines malloc, fwrite, …)…
		const defined = execFileSync('nm', ['-D', '--defined-only', file], { encoding: 'utf8' });
		expect(defined).not.toMatch(/ (malloc|fwrite|pthread_create)$/m);
		// …and no initial-exec TLS, which musl cannot give a library loaded by dlopen.
		expect(dynamic).not.toMatch(/STATIC_TLS/);
		const relocations = execFileSync('readelf', ['-rW', file], { encoding: 'utf8' });
		expect(relocations).not.toMatch(/R_(X86_64|AARCH64)_(TPOFF|TLS_TPREL)/);
	});
});

describe('each Linux binary, installed from its tarball, loads and round-trips in a Node of its own libc and arch', () => {
	let server;
	beforeAll(async () => {
		server = await startRedis();
	});
	afterAll(() => server?.stop());

	const LINUX = [...GNU, ...MUSL];
	it.each(LINUX)('%s', async (platform) => {
		const runtime = config.runtimes[platform];
		const [, arch, libc] = platform.split('-');
		console.log(`${platform}: ${runtime.describe}${runtime.muslLdd ? ' (/usr/bin/ldd is musl, as on Alpine)' : ''}`);
		const run = await runAsync(runtime.cmd, [...runtime.args, 'roundtrip.mjs', server.url], {
			cwd: config.project,
			env: { ...process.env, ...runtime.env },
			timeout: 150_000,
		});
		expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0);
		expect(run.stderr).toBe('');
		const report = JSON.parse(run.stdout.trim().split('\n').at(-1));
		// The package's loader picked this platform's package by itself.
		expect(report).toEqual(roundTripReport({ runtime: 'node', arch, platform, libc: libc === 'gnu' ? 'glibc' : 'musl' }));
	});
});

describe('macOS binaries (built here, not run: checked as Mach-O files)', () => {
	const zigLib = execFileSync('python3', ['-c', 'import ziglang, os; print(os.path.dirname(ziglang.__file__))'], { encoding: 'utf8' }).trim();
	const libSystemStub = join(zigLib, 'lib', 'libc', 'darwin', 'libSystem.tbd');

	it.each(DARWIN)('%s', (platform) => {
		const arch = platform.split('-')[1];
		const m = readMachO(binary(platform));
		expect(m.cputype).toBe(CPU[arch]);
		expect(m.filetype).toBe(MH_DYLIB);
		expect(isMacos(m)).toBe(true);
		console.log(`${platform}: minimum macOS ${m.minMacos} (SDK stub ${m.sdk}); loads ${m.dylibs.join(', ')}`);
		expect(m.minMacos).toBe(MACOS_MIN);
		expect(m.exports).toContain('_napi_register_module_v1');
		// Nothing but libSystem (no framework: the Security/CoreFoundation stubs were only
		// for the linker).
		expect(m.dylibs).toEqual(['/usr/lib/libSystem.B.dylib']);
		// Every import is bound either by flat lookup, and then is Node-API (Node provides
		// it at load: `-undefined dynamic_lookup`), or to libSystem, and then libSystem (as
		// zig's stub of the macOS SDK describes it) exports it for this architecture.
		const libSystem = tbdExports(libSystemStub, `${arch === 'x64' ? 'x86_64' : 'arm64'}-macos`);
		expect(libSystem.size).toBeGreaterThan(1000);
		expect(m.undefined.length).toBeGreaterThan(0);
		const wrong = [];
		for (const name of m.undefined) {
			const ordinals = [...(m.binds.get(name) ?? [])];
			const nodeApi = /^_(napi|node_api)_/.test(name);
			const ok = ordinals.length === 1 && (nodeApi ? ordinals[0] === BIND.FLAT_LOOKUP : ordinals[0] === 1 && libSystem.has(name));
			if (!ok) wrong.push(`${name} (bound with ${ordinals.join(', ') || 'nothing'})`);
		}
		expect(wrong).toEqual([]);
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
		expect(run.stderr).toMatch(/Prebuilt: linux-x64-gnu, linux-arm64-gnu, linux-x64-musl, linux-arm64-musl, darwin-arm64, darwin-x64/);
	});
});

describe('npm pack of each platform package', () => {
	it.each(Object.keys(PLATFORMS))('%s yields a tarball holding its binary, installed into the project', (platform) => {
		const tarball = join(root, 'dist', `tmcp-rs-session-manager-redis-${platform}-0.1.0.tgz`);
		expect(existsSync(tarball)).toBe(true);
		const files = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).trim().split('\n');
		expect(files).toContain(`package/session-manager-redis.${platform}.node`);
		expect(files).toContain('package/package.json');
		const manifest = JSON.parse(execFileSync('tar', ['-xzOf', tarball, 'package/package.json'], { encoding: 'utf8' }));
		const [os, cpu, libc] = platform.split('-');
		expect(manifest.os).toEqual([os]);
		expect(manifest.cpu).toEqual([cpu]);
		if (libc) expect(manifest.libc).toEqual([libc === 'gnu' ? 'glibc' : 'musl']);
		else expect(manifest.libc).toBeUndefined();
		const ours = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
		expect(ours.optionalDependencies[manifest.name]).toBe(manifest.version);
		// pnpm installed it beside the main package, where the loader looks for it.
		const mainPackage = realpathSync(join(config.project, 'node_modules', '@tmcp-rs', 'session-manager-redis'));
		const installed = join(mainPackage, '..', `session-manager-redis-${platform}`);
		expect(existsSync(join(installed, `session-manager-redis.${platform}.node`))).toBe(true);
	});
});
