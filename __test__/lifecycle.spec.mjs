// Leaks, exit, teardown and loading, each in a child process so that a crash shows as a
// crash; and the warnings that stand in for onError.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { RedisInfoSessionManager } from '../index.mjs';
import { eventually } from './helpers/redis.mjs';
import { useTestRedis } from './helpers/suite.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));

let server;
let redis;
useTestRedis((s, r) => {
	server = s;
	redis = r;
});

/** Runs a fixture with node; resolves with its exit and output (kills it after `limitMs`). */
function runFixture(name, args, { nodeArgs = [], limitMs = 120_000 } = {}) {
	const script = fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
	const child = spawn(process.execPath, [...nodeArgs, script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
	let stdout = '';
	let stderr = '';
	child.stdout.on('data', (d) => (stdout += d));
	child.stderr.on('data', (d) => (stderr += d));
	const guard = setTimeout(() => child.kill('SIGKILL'), limitMs);
	return new Promise((resolve) =>
		child.once('exit', (code, signal) => {
			clearTimeout(guard);
			resolve({ code, signal, stdout, stderr });
		}),
	);
}

const MB = 1024 * 1024;

describe('no leaks', () => {
	it('100,000 create/send/delete and 100,000 info set/delete cycles, twice, leave memory and handles flat', async () => {
		const run = await runFixture('leak-cycles.mjs', [server.url, '100000'], { nodeArgs: ['--expose-gc'], limitMs: 240_000 });
		expect(run.code, run.stderr).toBe(0);
		const { before, middle, after, delivered, expected } = JSON.parse(run.stdout);
		// Every cycle's message was sent by another manager and received.
		expect(delivered).toBe(expected);
		const growth = (from, to, key) => (to[key] - from[key]) / MB;
		const shown = JSON.stringify({ before, middle, after });
		// The first round may still warm up (allocator arenas: measured 18-21 MB of RSS);
		// the second runs the same 200,000 cycles on a warm process (measured -1.3 to
		// +2.9 MB of RSS), so a leak of 50 bytes per cycle fails it.
		expect(growth(before, middle, 'rss'), shown).toBeLessThan(40);
		expect(growth(middle, after, 'rss'), shown).toBeLessThan(10);
		// The V8 heap and memory outside it that V8 knows of (the delivered messages' and
		// batches' buffers): flat in both rounds (measured within 0.4 MB and 0 MB).
		expect(Math.abs(growth(before, middle, 'heap')), shown).toBeLessThan(2);
		expect(Math.abs(growth(middle, after, 'heap')), shown).toBeLessThan(2);
		expect(Math.abs(growth(before, after, 'external')), shown).toBeLessThan(1);
		expect(Math.abs(growth(before, after, 'arrayBuffers')), shown).toBeLessThan(1);
		expect(middle.handles).toBe(before.handles);
		expect(after.handles).toBe(before.handles);
		// Only the data epoch remains (see README, "Wire format"), and it expires by itself.
		expect(await redis.keys('leak:*')).toEqual(['leak:tmcp:epoch']);
		expect(await redis.ttl('leak:tmcp:epoch')).toBeGreaterThan(0);
	}, 300_000);
});

describe('exit and teardown', () => {
	it('managers garbage-collected without close() do not crash the process at exit', async () => {
		for (let i = 0; i < 5; i++) {
			const run = await runFixture('gc-without-close.mjs', [server.url], { nodeArgs: ['--expose-gc'], limitMs: 30_000 });
			expect({ code: run.code, signal: run.signal }, run.stderr).toEqual({ code: 0, signal: null });
			expect(run.stdout).toContain('dropped; collected 4 of 4');
		}
	});

	it('Workers using the managers, terminated 100 times with calls in flight, never crash the process', async () => {
		const run = await runFixture('worker-churn.mjs', [server.url, '100']);
		expect({ code: run.code, signal: run.signal }, run.stderr).toEqual({ code: 0, signal: null });
		expect(run.stdout).toContain('survived 100 rounds');
	});
});

describe('observability', () => {
	it('without onError, background failures become one rate-limited warning, never a crash', async () => {
		const warnings = [];
		const onWarning = (w) => (w.code === 'TMCP_REDIS' || w.code === 'TEST_SENTINEL') && warnings.push(w);
		process.on('warning', onWarning);
		const info = new RedisInfoSessionManager(server.url, { keyPrefix: 'warn:' });
		try {
			await redis.set('warn:tmcp:subscriptions:file:///w', 'not a set');
			// Failures in the background: setters whose promises the app dropped, failing at
			// Redis (WRONGTYPE) a round trip later.
			const dropped = Array.from({ length: 20 }, (_, i) => info.addSubscription(`w${i}`, 'file:///w'));
			await Promise.allSettled(dropped);
			// A warning emitted after them arrives after theirs.
			process.emitWarning('sentinel', { code: 'TEST_SENTINEL' });
			await eventually(() => warnings.some((w) => w.code === 'TEST_SENTINEL'), 5000, 'the sentinel warning');
		} finally {
			process.off('warning', onWarning);
			await info.close();
		}
		const ours = warnings.filter((w) => w.code === 'TMCP_REDIS');
		expect(ours).toHaveLength(1);
		expect(ours[0].message).toMatch(/^Could not subscribe session w0 to file:\/\/\/w: .*WRONGTYPE/);
	});
});

describe('loading', () => {
	it('installed without its platform package (--omit=optional): the error names the package to install', () => {
		// The package as `npm pack` makes it, unpacked where an install puts it, without the
		// optional platform package: what `npm install --omit=optional` leaves.
		const libc = /** @type {any} */ (process.report.getReport()).header.glibcVersionRuntime ? 'gnu' : 'musl';
		const here = `linux-${process.arch}-${libc}`;
		const work = mkdtempSync(join(tmpdir(), 'tmcp-rs-omit-'));
		try {
			const tarball = execFileSync('npm', ['pack', '--silent', '--pack-destination', work], { cwd: root, encoding: 'utf8' }).trim().split('\n').pop();
			const target = join(work, 'node_modules', '@tmcp-rs', 'session-manager-redis');
			mkdirSync(target, { recursive: true });
			execFileSync('tar', ['xzf', join(work, tarball), '-C', target, '--strip-components=1']);
			const env = { ...process.env };
			delete env.NAPI_RS_NATIVE_LIBRARY_PATH;
			for (const [how, code] of [
				['require', "require('@tmcp-rs/session-manager-redis')"],
				['import', "import('@tmcp-rs/session-manager-redis').catch((e) => { console.error(e.message); process.exit(1); })"],
			]) {
				const run = spawnSync(process.execPath, ['-e', code], { cwd: work, env, encoding: 'utf8' });
				expect(run.status, how).not.toBe(0);
				expect(run.stderr, how).toContain(
					`the binary package for this platform (${here}), @tmcp-rs/session-manager-redis-${here}, is not installed or could not be loaded. ` +
						'It is an optional dependency: reinstall without --no-optional / --omit=optional.',
				);
			}
		} finally {
			rmSync(work, { recursive: true, force: true });
		}
	});
});
