// URL forms: database numbers and Unix sockets reach the right place.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { observer, startRedis } from './helpers/redis.mjs';
import { roundTrip } from './helpers/roundtrip.mjs';

let dir;
let server;
let socket;
let redis;
beforeAll(async () => {
	dir = mkdtempSync(join(tmpdir(), 'tmcp-rs-unix-'));
	socket = join(dir, 'redis.sock');
	server = await startRedis({ args: ['--unixsocket', socket, '--unixsocketperm', '700'] });
	redis = await observer(server.url);
});
afterAll(async () => {
	await redis?.quit();
	await server?.stop();
	if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('URL forms', () => {
	it('a database number in the URL selects that database', async () => {
		const url = `redis://127.0.0.1:${server.port}/3`;
		expect(await roundTrip(url)).toEqual({ name: url, version: '1' });
		await redis.select(3);
		expect(JSON.parse(await redis.get('tmcp:client_info:t')).name).toBe(url);
		await redis.select(0);
		expect(await redis.exists('tmcp:client_info:t')).toBe(0);
	});

	it.each(['redis+unix', 'unix'])('%s:// reaches a Unix socket, with ?db=', async (scheme) => {
		const url = `${scheme}://${socket}?db=5`;
		expect(await roundTrip(url)).toEqual({ name: url, version: '1' });
		await redis.select(5);
		expect(JSON.parse(await redis.get('tmcp:client_info:t')).name).toBe(url);
		await redis.select(0);
	});
});
