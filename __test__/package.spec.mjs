// Install as users do: the packed main package plus the packed linux-x64-gnu package,
// installed with pnpm into a fresh project (no Rust toolchain involved), then a real
// create/send round trip through `import` and `require`; and the public types.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testRedis } from './helpers/redis.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = (name) => join(root, 'node_modules', '.bin', name);
let work;
let server;

beforeAll(async () => {
	work = mkdtempSync(join(tmpdir(), 'tmcp-rs-pack-'));
	server = await testRedis();
});

afterAll(async () => {
	await server?.stop();
	if (work) rmSync(work, { recursive: true, force: true });
});

function pack(dir) {
	const out = execFileSync('npm', ['pack', '--silent', '--pack-destination', work], { cwd: dir }).toString().trim();
	return join(work, out.split('\n').pop());
}

describe('packed packages', () => {
	it('install with pnpm into a fresh project and work through import and require', () => {
		const platformDir = join(work, 'platform');
		cpSync(join(root, 'npm', 'linux-x64-gnu'), platformDir, { recursive: true });
		const binary = readdirSync(join(root, 'lib')).find((f) => f.endsWith('.linux-x64-gnu.node'));
		cpSync(join(root, 'lib', binary), join(platformDir, binary));
		const platformTgz = pack(platformDir);
		const mainTgz = pack(root);
		expect(execFileSync('tar', ['tzf', mainTgz]).toString()).not.toMatch(/\.node$/m);
		expect(execFileSync('tar', ['tzf', platformTgz]).toString()).toMatch(/\.linux-x64-gnu\.node$/m);

		const app = join(work, 'app');
		mkdirSync(app);
		writeFileSync(
			join(app, 'package.json'),
			JSON.stringify({
				name: 'app',
				private: true,
				type: 'module',
				dependencies: { '@tmcp-rs/session-manager-redis': `file:${mainTgz}` },
				pnpm: { overrides: { '@tmcp-rs/session-manager-redis-linux-x64-gnu': `file:${platformTgz}` } },
			}),
		);
		const install = spawnSync(bin('pnpm'), ['install', '--no-frozen-lockfile', '--reporter=append-only'], {
			cwd: app,
			encoding: 'utf8',
			env: { ...process.env, PATH: `${join(root, 'node_modules', '.bin')}:${process.env.PATH}` },
		});
		expect(install.status, install.stdout + install.stderr).toBe(0);

		writeFileSync(
			join(app, 'roundtrip.mjs'),
			`import { RedisStreamSessionManager, RedisInfoSessionManager } from '@tmcp-rs/session-manager-redis';
			import { createRequire } from 'node:module';
			const cjs = createRequire(import.meta.url)('@tmcp-rs/session-manager-redis');
			if (cjs.RedisStreamSessionManager !== RedisStreamSessionManager) throw new Error('require and import differ');
			const url = process.argv[2];
			const streams = new RedisStreamSessionManager(url, { keyPrefix: 'pack:' });
			const info = new cjs.RedisInfoSessionManager(url, { keyPrefix: 'pack:' });
			const got = [];
			await streams.create('p1', { enqueue: (c) => got.push(new TextDecoder().decode(c)), close() {} });
			await streams.send(['p1'], 'round ✓ trip');
			await info.setLogLevel('p1', 'debug');
			const level = await info.getLogLevel('p1');
			for (let i = 0; i < 200 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
			await streams.close();
			await info.close();
			console.log(JSON.stringify({ got, level }));`,
		);
		const run = spawnSync(process.execPath, ['roundtrip.mjs', server.url], { cwd: app, encoding: 'utf8' });
		expect(run.status, run.stderr).toBe(0);
		expect(JSON.parse(run.stdout)).toEqual({ got: ['round ✓ trip'], level: 'debug' });
	});
});

describe('types', () => {
	it('our classes type-check where @tmcp/session-manager, HttpTransport and SseTransport expect theirs', () => {
		const tsc = spawnSync(bin('tsc'), ['-p', join(root, '__test__', 'types')], { encoding: 'utf8' });
		expect(tsc.status, tsc.stdout + tsc.stderr).toBe(0);
	});

	it('index.d.ts itself has no type errors', () => {
		const tsc = spawnSync(
			bin('tsc'),
			['--noEmit', '--strict', '--module', 'nodenext', '--target', 'es2022', '--lib', 'es2022,esnext.disposable,dom', '--types', 'node', join(root, 'index.d.ts')],
			{ encoding: 'utf8', cwd: root },
		);
		const ours = tsc.stdout.split('\n').filter((line) => line.startsWith('index.d.ts('));
		expect(ours).toEqual([]);
	});
});
